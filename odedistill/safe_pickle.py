"""Unpickling untrusted files without running their code: an allow-list of globals and a guarded BUILD.

A pickle names functions and classes and calls them; a file from elsewhere can name
``os.system``. :class:`AllowListUnpickler` resolves only the globals of its ``allowed`` table
(each may map to a harmless stand-in), refuses persistent ids, and lets the BUILD opcode set
state only on instances of ``buildable`` types: a file cannot set attributes on classes,
functions or tensors. It is Python's pure-Python unpickler, so that BUILD can be limited.
The EDM checkpoint reader and the dataset readers (CIFAR-10, downsampled ImageNet) both use it.
"""

from __future__ import annotations

import builtins
import pickle
from typing import IO, Any, ClassVar

from odedistill.errors import UserError


class AllowListUnpickler(pickle._Unpickler):
    """Resolve only ``allowed[(module, name)]``; set state only on ``buildable`` instances."""

    allowed: ClassVar[dict[tuple[str, str], Any]] = {}
    buildable: ClassVar[tuple[type, ...]] = ()

    dispatch = dict(pickle._Unpickler.dispatch)

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, self.buildable):
            inst.__setstate__(state)
        elif not (state is None or (isinstance(state, dict | tuple) and len(state) == 0)):
            raise UserError(
                f"refusing to set the state of a {type(inst).__name__} object in the pickle"
            )

    dispatch[pickle.BUILD[0]] = _load_build

    def lookup(self, module: str, name: str) -> Any:
        """The object standing for ``module.name``, or None to refuse it."""
        return self.allowed.get((module, name))

    def refusal(self, module: str, name: str) -> str:
        return f"refusing to load {module}.{name}"

    def find_class(self, module: str, name: str) -> Any:
        target = self.lookup(module, name)
        if target is None:
            raise UserError(self.refusal(module, name))
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise UserError("refusing a persistent id in the pickle")


def load_untrusted(
    unpickler: type[AllowListUnpickler], file: IO[bytes], where: str, what: str = "pickle"
) -> Any:
    """Unpickle ``file`` with ``unpickler``; every failure is a one-line ``UserError``.

    Refusals keep their message (prefixed with ``where``); any other failure on untrusted
    bytes (truncation, a bad opcode, an absurd size) is reported as an unreadable file.
    """
    try:
        return unpickler(file, encoding="latin1").load()
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    except RecursionError:
        raise UserError(f"{where} is nested too deeply to be a data file") from None
    except Exception as e:  # anything else on untrusted bytes is bad input, on one line
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{where} is not a readable {what} ({type(e).__name__}: {first})") from None


# ------------------------------------------------------------------------ harmless builtins
def latin1_bytes(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode(str, 'latin1')``: how protocol-2 pickles spell ``bytes``; nothing else."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "").replace("_", "") != "latin1":
        raise UserError(f"refusing _codecs.encode with encoding {encoding!r} in the pickle")
    return obj.encode("latin1")


def plain_bytes(*args: Any) -> bytes:
    """``bytes(...)`` from a string or bytes; a size (``bytes(n)``) is refused."""
    if args and isinstance(args[0], int):
        raise UserError("refusing bytes(n) in the pickle")
    return builtins.bytes(*args)


def plain_bytearray(*args: Any) -> bytearray:
    """``bytearray(...)`` from a string or bytes; a size is refused."""
    if args and isinstance(args[0], int):
        raise UserError("refusing bytearray(n) in the pickle")
    return builtins.bytearray(*args)


CONTAINERS: dict[tuple[str, str], Any] = {
    (module, name): getattr(builtins, name)
    for module in ("builtins", "__builtin__")
    for name in ("list", "dict", "tuple", "set", "frozenset")
} | {
    (module, name): fn
    for module in ("builtins", "__builtin__")
    for name, fn in (("bytes", plain_bytes), ("bytearray", plain_bytearray))
}
"""Builtin containers, with ``bytes``/``bytearray`` that refuse sizes."""
