"""system.kind = 'package.module:ClassName': a user's own ODESystem subclass, with ``[system.args]``.

Naming a module runs that module's code (its import), as ``python -c "import package.module"``
would: use recipes from people you trust. The module is looked for first in ``system.path``
(the recipe's folder unless set), then on the Python path. A name read from a file (a
checkpoint) is never imported: the user names the class again.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import SystemKind, Teacher
from odedistill.kinds.systems.builtin import construct
from odedistill.registry import Registry
from odedistill.systems.base import ODESystem

#: 'package.module:ClassName'
USER_KIND = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

#: the name the user kind is registered (and documented) under
USER_NAME = "package.module:ClassName"


@dataclass
class UserOptions:
    args: dict[str, Any] = _f({}, "keyword arguments of your class")
    path: str = _f(
        "",
        "folder searched first when importing the module (set from the recipe's folder when empty)",
    )


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


class UserKind(SystemKind):
    """your own ODESystem subclass with [system.args]; importing it runs its code.

    Your own ODESystem subclass, imported by its 'package.module:ClassName'.
    """

    config = UserOptions
    capabilities = frozenset({"imports"})

    def build(self, options: UserOptions, cfg: Any, teacher: Teacher | None) -> ODESystem:
        kind = cfg.system.kind
        cls = import_system_class(kind, options.path)
        system = construct(cls, options.args, repr(kind))
        for attr in ("t_start", "t_end", "state_shape"):
            if not hasattr(system, attr):
                raise UserError(f"system {kind!r} does not set {attr} in its __init__")
        return system


class SystemRegistry(Registry[SystemKind]):
    """The registered system kinds; any 'package.module:ClassName' is the user kind."""

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or self.is_user_kind(name)

    def is_builtin(self, name: object) -> bool:
        """``name`` is a registered kind that building never imports anything for."""
        return super().__contains__(name) and "imports" not in self.get(str(name)).capabilities

    def is_user_kind(self, name: object) -> bool:
        """Whether ``name`` is a user's 'package.module:ClassName' (built by importing it)."""
        return isinstance(name, str) and bool(USER_KIND.match(name)) and not self.is_builtin(name)

    def get(self, name: str) -> SystemKind:
        if not super().__contains__(name) and self.is_user_kind(name):
            name = USER_NAME
        return super().get(name)
