"""A user's own ODE in a recipe: ``[system] kind = "package.module:ClassName"`` with ``[system.args]``.

Naming a module runs that module's code (its import), as ``python -c "import package.module"``
would: use recipes from people you trust. The module is looked for first in ``system.path``
(the recipe's folder unless set), then on the Python path.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import nn

from odedistill.errors import UserError
from odedistill.registry import Registry
from odedistill.systems.base import ODESystem

#: the validated recipe that a system's builder reads (``odedistill.infra.config.Config``); that
#: module imports the system registry (its choices), so this one names its type without importing it
Config = Any

#: 'package.module:ClassName'
USER_KIND = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class Teacher(NamedTuple):
    """A teacher denoiser with the shape of its states and its number of classes.

    ``denoiser`` is None for a teacher known only by its shapes (a student rebuilt from a
    checkpoint samples without its teacher).
    """

    denoiser: nn.Module | None
    state_shape: tuple[int, ...]
    label_dim: int


@dataclass(frozen=True)
class SystemKind:
    """How to build one kind of system: from the config and, if it has one, its teacher."""

    build: Callable[[Config, Teacher | None], ODESystem]
    needs_teacher: bool = False


@contextlib.contextmanager
def _searched_first(folder: str) -> Iterator[None]:
    """``folder`` at the front of sys.path while importing (left as it was afterwards)."""
    if not folder:
        yield
        return
    # an absolute path: a relative one ('.') would reuse the finder (and its cached listing) that
    # an earlier import made for another working folder
    folder = os.path.abspath(folder)
    importlib.invalidate_caches()
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def import_system_class(kind: str, path: str = "") -> type[ODESystem]:
    """The class a 'package.module:ClassName' names; a one-line ``UserError`` when it cannot be had."""
    module_name, _, qualname = kind.partition(":")
    where = f" (searched {path} and the Python path)" if path else " (searched the Python path)"
    with _searched_first(path):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            missing = e.name or module_name
            raise UserError(
                f"system.kind = {kind!r}: cannot import module {missing!r}{where}"
            ) from None
        except Exception as e:  # the user's module failed while running
            first = (str(e).strip().splitlines() or [""])[0]
            raise UserError(
                f"system.kind = {kind!r}: importing module {module_name!r} failed: "
                f"{type(e).__name__}: {first}"
            ) from None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UserError(
                f"system.kind = {kind!r}: module {module_name!r} has no class {qualname!r}"
            )
    if not (isinstance(obj, type) and issubclass(obj, ODESystem)):
        raise UserError(
            f"system.kind = {kind!r}: {qualname!r} in {module_name!r} is not an "
            "odedistill.ODESystem subclass"
        )
    return obj


#: the range of every number in a built-in system's arguments
BUILTIN_ARG_BOUND = 1e3


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


def _user_system(cfg: Config, teacher: Teacher | None) -> ODESystem:
    s = cfg.system
    system = construct(import_system_class(s.kind, s.path), s.args, repr(s.kind))
    for attr in ("t_start", "t_end", "state_shape"):
        if not hasattr(system, attr):
            raise UserError(f"system {s.kind!r} does not set {attr} in its __init__")
    return system


class SystemRegistry(Registry[SystemKind]):
    """The registered systems, plus any 'package.module:ClassName' (imported when built)."""

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and bool(USER_KIND.match(name)))

    def is_builtin(self, name: object) -> bool:
        """``name`` is a registered system (one that building never imports anything for)."""
        return isinstance(name, str) and super().__contains__(name)

    def is_user_kind(self, name: object) -> bool:
        """Whether ``name`` is a user's 'package.module:ClassName' (built by importing it)."""
        return isinstance(name, str) and bool(USER_KIND.match(name)) and name not in self.names()

    def get(self, name: str) -> SystemKind:
        if self.is_user_kind(name):
            return SystemKind(_user_system)
        return super().get(name)

    def describe(self) -> str:
        return (
            super().describe()
            + ", or 'package.module:ClassName': your own ODESystem subclass, built with "
            "[system.args] (importing the module runs its code; docs/custom_ode.md)"
        )
