"""The strategy registry: names in registration order, unknown names listed, no double names."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e3core._registry import Registry


@given(st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=12))
def test_names_round_trip_in_registration_order(names: list[str]) -> None:
    registry: Registry[int] = Registry("thing")
    for i, name in enumerate(names):
        registry.add(name, i)
    assert registry.names() == tuple(names) and len(registry) == len(names)
    for i, name in enumerate(names):
        assert name in registry and registry.get(name) == i
        assert registry.check("arg", name) == name


def test_unknown_and_repeated_names() -> None:
    registry: Registry[type] = Registry("allocator")

    @registry.register("uniform")
    class Uniform:
        pass

    assert registry.get("uniform") is Uniform
    with pytest.raises(ValueError, match=r"allocator must be one of \('uniform',\).*got 'bogus'"):
        registry.get("bogus")
    with pytest.raises(ValueError, match=r"e3\.allocator must be one of .*got 3"):
        registry.check("e3.allocator", 3)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("uniform", int)
    with pytest.raises(TypeError, match="non-empty string"):
        registry.register("")
