"""system.kind = 'linear' and 'pendulum': the built-in ODEs of the examples, with their keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import SystemKind, Teacher
from odedistill.systems.base import ODESystem

#: the range of every number in a built-in system's arguments
BUILTIN_ARG_BOUND = 1e3


@dataclass
class ArgsOptions:
    args: dict[str, Any] = _f(
        {},
        "keyword arguments of the system's class (e.g. {T = 3.0}; numbers within ±1000)",
    )


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [n for v in value for n in _numbers(v)]
    return [value]


def check_numbers(args: dict[str, Any], what: str, bound: float = BUILTIN_ARG_BOUND) -> None:
    """Every argument is a number (or nested lists of numbers) within ±``bound``."""
    for key, value in args.items():
        for n in _numbers(value):
            if isinstance(n, bool) or not isinstance(n, int | float):
                raise UserError(
                    f"system {what}: system.args.{key} must be a number (or a list of numbers), "
                    f"got {n!r}"
                )
            if not abs(n) <= bound:
                raise UserError(
                    f"system {what}: system.args.{key} = {n!r} is outside [-{bound:g}, {bound:g}]"
                )


def construct(
    cls: type[ODESystem], args: dict[str, Any], what: str, builtin: bool = False
) -> ODESystem:
    """``cls(**args)``, with a bad argument reported in one line; a built-in system's
    arguments must be numbers within ±``BUILTIN_ARG_BOUND``."""
    if builtin:
        check_numbers(args, what)
    try:
        return cls(**args)
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"system {what} with system.args {args}: {first}") from None


class BuiltinKind(SystemKind):
    """One of odedistill's own ODE classes, built with ``system.args`` (numbers only)."""

    config = ArgsOptions

    def __init__(self, cls: type[ODESystem]) -> None:
        self.cls = cls

    def build(self, options: ArgsOptions, cfg: Any, teacher: Teacher | None) -> ODESystem:
        return construct(self.cls, options.args, repr(cfg.system.kind), True)
