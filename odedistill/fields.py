"""Config fields with their help, choices and range: ``_f`` (shared by the config sections)."""

from __future__ import annotations

from dataclasses import field
from typing import Any

#: the bound of every integer field without a tighter one: larger values are typing mistakes
MAX_INT = 2**31 - 1
#: the bound of |value| of every float field without a tighter range
MAX_FLOAT = 1e6


def _f(
    default: Any,
    help: str,
    choices: Any = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    item: dict[str, Any] | None = None,
    max_len: int = 16,
) -> Any:
    """A config field with its one-line help, allowed choices (a tuple or a registry) and range.

    Lists give their items' range as ``item`` (``dict(lo=1, hi=64)``) and hold at most
    ``max_len`` items. Every number must be finite; an integer without ``hi`` is at most
    ``MAX_INT``, a float without ``lo`` or ``hi`` within ±``MAX_FLOAT``.
    """
    meta = {
        "help": help,
        "choices": choices,
        "lo": lo,
        "hi": hi,
        "lo_open": lo_open,
        "item": item or {},
        "max_len": max_len,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)
