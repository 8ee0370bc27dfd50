"""Named strategies: one registry per module, each module owning its names.

A module that offers strategies by name (allocators, knapsack values, temperature controllers,
priors) keeps one :class:`Registry` and registers each strategy where it is defined; settings,
the scheduler and the adapters look names up there instead of repeating tuples of names, so a
new strategy is added in one place and every error lists what is known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from e3core._validation import _show

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to strategies (classes or factories), in registration order.

    Args:
        kind: What the names name, for messages (``"allocator"``, ``"controller"``, ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name`` (a name is registered once)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty string, got {_show(name)}")

        def add(target: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = target
            return target

        return add

    def add(self, name: str, target: T) -> T:
        """Register ``target`` under ``name`` (the non-decorator form of :meth:`register`)."""
        return self.register(name)(target)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def check(self, argument: str, name: object) -> str:
        """Return ``name`` if registered, else raise naming ``argument`` and the known names."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"{argument} must be one of {self.names()}, got {_show(name)}")
        return name

    def get(self, name: str, *, argument: str | None = None) -> T:
        """The strategy registered under ``name``; unknown names list the known ones."""
        return self._entries[self.check(argument or self.kind, name)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
