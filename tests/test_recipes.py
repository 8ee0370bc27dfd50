"""The paper recipes of all three adapters are ``E3Settings.paper(G)``: one test, one source.

The paper's configuration is written once, in :meth:`e3core.settings.E3Settings.paper`; the TRL,
verl and OpenRLHF recipes in ``adapters/`` carry it in their own spellings, and this test reads
each recipe as its adapter does (``recipe_settings``) and compares every E3 setting. A second
test changes one value in a copy of each recipe and checks that the comparison sees it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from recipe_settings import PAPER_RECIPES, differences, recipe_settings

from e3core.settings import E3Settings

ADAPTERS = sorted(PAPER_RECIPES)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_paper_recipe_is_e3_settings_paper(adapter: str) -> None:
    settings, g = recipe_settings(adapter, PAPER_RECIPES[adapter])
    diff = differences(settings, E3Settings.paper(g), g)
    assert not diff, f"{adapter}'s paper recipe differs from E3Settings.paper({g}): {diff}"


# One E3 value of each recipe, as written, and a changed copy of it.
EDITS = {
    "trl": ("e3_widen_max: 12", "e3_widen_max: 14"),
    "verl": ("  widen_max: 12", "  widen_max: 14"),
    "openrlhf": ("--e3.widen_max 12", "--e3.widen_max 14"),
}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_changed_paper_recipe_is_caught(adapter: str, tmp_path: Path) -> None:
    source = PAPER_RECIPES[adapter]
    old, new = EDITS[adapter]
    text = source.read_text()
    assert text.count(old) == 1, f"{source.name} no longer holds {old!r}"
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    copy.write_text(text.replace(old, new))
    settings, g = recipe_settings(adapter, copy)
    assert differences(settings, E3Settings.paper(g), g) == {"widen_max": (14, 12)}
