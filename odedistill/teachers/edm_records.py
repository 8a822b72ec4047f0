"""Inert stand-ins for what an EDM checkpoint names, and the allow-list that maps names to them.

Every global an ``edm-*.pkl`` may name resolves to something here: a record that keeps a
class name and state, a tensor rebuilder that checks bounds, or a plain container. Nothing
named in the file is imported or called. Used by :mod:`odedistill.teachers.edm_pickle`.
"""

from __future__ import annotations

import collections
import hashlib
import io
from dataclasses import dataclass
from typing import Any

import torch

from odedistill.errors import UserError

# ---------------------------------------------------------------------------------------------
# Inert records that stand in for the classes named in the file.


@dataclass
class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` leaves behind: a name and a state, no code."""

    class_name: str
    state: dict[str, Any]
    version: int
    module_src_sha256: str


class TorchModuleRecord:
    """Stand-in for a plain ``torch.nn`` container pickled by class: keeps the state it is given."""

    class_name = "Module"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UserError(f"bad state for pickled torch.nn.{self.class_name}: not a dict")
        self.state = state


def _module_record(name: str) -> type[TorchModuleRecord]:
    return type(name, (TorchModuleRecord,), {"class_name": name})


class EasyDictRecord(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access): a plain dict here."""


class NumpyDTypeRecord:
    """Stand-in for ``numpy.dtype(spec, align, copy)``; only plain numeric dtypes are accepted."""

    _NUMERIC = frozenset(
        ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
    )

    def __init__(self, spec: Any, *_: Any) -> None:
        if not isinstance(spec, str) or spec not in self._NUMERIC:
            raise UserError(f"refusing numpy dtype {spec!r} in the pickle (only numeric scalars)")
        self.spec = spec
        self.byteorder = "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = "<" if state[1] in ("|", "=") else state[1]


class _RefusedType:
    """Marker for a tensor type named only as an argument of ``_rebuild_from_type_v2``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"refusing to construct {cls.__name__} from the pickle")


class _TensorType(_RefusedType):
    pass


class _ParameterType(_RefusedType):
    pass


# ---------------------------------------------------------------------------------------------
# Safe replacements for the functions the file names.


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Our ``torch_utils.persistence._reconstruct_persistent_obj``: record, never execute."""
    if not isinstance(meta, dict):
        raise UserError("bad persistent object in the pickle: meta is not a dict")
    if meta.get("type") != "class":
        raise UserError(f"unsupported persistent object type {meta.get('type')!r} in the pickle")
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise UserError("bad persistent object in the pickle: no class_name or state")
    src_bytes = src.encode("utf-8", "surrogatepass") if isinstance(src, str) else b""
    version = meta.get("version")
    return PersistentRecord(
        class_name=class_name,
        state=dict(state),
        version=version if isinstance(version, int) else -1,
        module_src_sha256=hashlib.sha256(src_bytes).hexdigest(),
    )


def _load_from_bytes(data: Any) -> Any:
    """``torch.storage._load_from_bytes`` via torch's weights-only unpickler, never full pickle."""
    if not isinstance(data, (bytes, bytearray)):
        raise UserError("bad tensor storage in the pickle: payload is not bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... on bad payloads
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
        raise UserError(
            f"refused a tensor storage in the pickle (torch weights-only load:"
            f" {detail or type(e).__name__})"
        ) from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UserError(f"bad tensor storage in the pickle: got {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    """A tensor view of a storage, refused unless it lies inside the storage."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UserError(f"bad tensor in the pickle: storage is a {type(storage).__name__}")
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride)):
        raise UserError("bad tensor in the pickle: offset, size and stride must be integers >= 0")
    if isinstance(storage, torch.TypedStorage):
        dtype, untyped = storage.dtype, storage._untyped_storage
    else:
        dtype, untyped = torch.uint8, storage
    t = torch.empty((0,), dtype=dtype, device=untyped.device)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=False))
    if len(size) != len(stride) or (all(size) and last >= untyped.nbytes() // t.element_size()):
        raise UserError("bad tensor in the pickle: it reaches outside its storage")
    return t.set_(untyped, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any
) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` without hooks: requires_grad and hooks are dropped."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.Tensor:
    """``torch._utils._rebuild_parameter(_with_state)``: the plain tensor is all we keep."""
    if not isinstance(data, torch.Tensor):
        raise UserError("bad parameter in the pickle: data is not a tensor")
    return data


_TENSOR_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    """``torch._tensor._rebuild_from_type_v2`` limited to our rebuilders and plain tensor types."""
    if func not in _TENSOR_REBUILDERS or new_type not in (_TensorType, _ParameterType):
        raise UserError("refusing a tensor subclass rebuild in the pickle")
    if not isinstance(args, tuple):
        raise UserError("bad tensor in the pickle: rebuild arguments are not a tuple")
    return func(*args)


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | complex | bool:
    """``numpy.core.multiarray.scalar`` for numeric dtypes, returned as a Python number."""
    import numpy as np

    if not isinstance(dtype, NumpyDTypeRecord) or not isinstance(data, (bytes, bytearray)):
        raise UserError("refusing a numpy scalar in the pickle that is not a plain number")
    np_dtype = np.dtype(dtype.spec).newbyteorder(dtype.byteorder)
    if len(data) != np_dtype.itemsize:
        raise UserError("bad numpy scalar in the pickle: wrong number of bytes")
    return np.frombuffer(bytes(data), dtype=np_dtype)[0].item()


# ---------------------------------------------------------------------------------------------
# The allow-list.

DTYPE_NAMES = frozenset(
    name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)
)

ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TensorType,
    ("torch._tensor", "Tensor"): _TensorType,
    ("torch.nn.parameter", "Parameter"): _ParameterType,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch.nn.modules.container", "ModuleDict"): _module_record("ModuleDict"),
    ("torch.nn.modules.container", "ModuleList"): _module_record("ModuleList"),
    ("torch.nn.modules.container", "Sequential"): _module_record("Sequential"),
    ("dnnlib.util", "EasyDict"): EasyDictRecord,
    ("numpy", "dtype"): NumpyDTypeRecord,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}
