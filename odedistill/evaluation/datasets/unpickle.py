"""The allow-list of data pickles: numpy arrays, dtypes, scalars and builtin containers, nothing else."""

from __future__ import annotations

from typing import IO, Any

import numpy as np

from odedistill.errors import UserError
from odedistill.safe_pickle import CONTAINERS, AllowListUnpickler, latin1_bytes, load_untrusted


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    found: dict[tuple[str, str], Any] = {}
    for package in ("numpy.core", "numpy._core"):
        found[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        found[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            found[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    found[("numpy", "ndarray")] = np.ndarray
    found[("numpy", "dtype")] = np.dtype
    # Python 3 writes ``bytes`` as ``_codecs.encode(str, 'latin1')`` under protocol 2.
    found[("_codecs", "encode")] = latin1_bytes
    return found | CONTAINERS


class DataUnpickler(AllowListUnpickler):
    """Rebuilds numpy arrays, dtypes, scalars and builtin containers; refuses any other global."""

    allowed = _numpy_globals()
    buildable = (np.ndarray, np.dtype)


def restricted_load(file: IO[bytes], where: str) -> Any:
    """Unpickle a data file that may hold only numpy arrays and builtin containers.

    Python 2 pickles (the CIFAR-10 batches) are read with ``encoding='latin1'``. Any other
    global, such as a function or class that could run code, makes this raise ``UserError``.
    """
    try:
        return load_untrusted(DataUnpickler, file, where)
    except UserError as e:
        if "refusing" in str(e):
            raise UserError(
                f"{where} is not a plain data pickle ({str(e).removeprefix(where + ': ')}); "
                "only files holding numpy arrays, lists and dicts are read"
            ) from None
        raise UserError(f"{e}; download it again") from None
