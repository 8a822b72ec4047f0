"""Named option lists: one registry per choice a recipe can make (schemes, grids, distances, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from odedistill.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    help: str


class Registry(Generic[T]):
    """Names mapped to implementations, in registration order, each with a one-line help.

    Config validation, the generated recipe reference, ``distill()`` and the benchmarks all
    read the same registry, so adding an option is one registration::

        SCHEMES.register("bdf2", BDF2, help="second-order backward difference")
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, value: T, help: str = "") -> T:
        """Add ``value`` under ``name`` (an error if the name is taken); returns ``value``."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        if not help:
            doc = getattr(value, "__doc__", None) or ""
            help = doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""
        self._entries[name] = Entry(name, value, help)
        return value

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry called ``name``; a ``UserError`` naming the valid choices otherwise."""
        if name not in self._entries:
            raise UserError(f"unknown {self.what} {name!r}{self.suggest(name)}")
        return self._entries[name].value

    def suggest(self, name: str) -> str:
        """'; did you mean ...' or '; expected one of ...' for a name that is not registered."""
        match = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.5)
        if match:
            return f"; did you mean {match[0]!r}?"
        return f"; expected one of {', '.join(repr(n) for n in self._entries)}"

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def describe(self) -> str:
        """'a' (help), 'b' (help) ... for documentation."""
        return ", ".join(
            f"'{e.name}' ({e.help})" if e.help else f"'{e.name}'" for e in self._entries.values()
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
