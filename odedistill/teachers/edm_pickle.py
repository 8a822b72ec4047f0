"""Read NVIDIA EDM checkpoints (``edm-*.pkl``) without EDM's code and without running their code.

EDM pickles its networks with ``torch_utils.persistence``: every network object is stored as a
call ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` carries the
source of the module that defines the class (``module_src``), the class name and the object's
``__dict__`` (``state``). EDM's own loader ``exec``s ``module_src``. This reader never does: a
restricted unpickler resolves only an explicit allow-list of globals, maps the persistence hook
to :func:`_reconstruct_persistent_obj` below (which keeps the class name and state, and only a
SHA-256 of the source), and rebuilds tensors through torch's weights-only loader. Anything else
in the file (``os.system``, ``builtins.eval``, an unknown class) stops the load with a one-line
:class:`~odedistill.errors.UserError` naming the refused global; nothing named in the file is
imported or called.

EDM's checkpoints are licensed CC BY-NC-SA 4.0 by NVIDIA; weights read from them keep that licence.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from odedistill.errors import UserError

__all__ = ["EDMCheckpoint", "PersistentRecord", "read_edm_pickle", "EDMUnpickler"]

# Positional constructor parameters of EDM's preconditioners, to name ``_init_args`` (EDM itself
# builds networks with keywords only, so ``_init_args`` is normally empty).
_POSITIONAL_PARAMS: dict[str, tuple[str, ...]] = {
    "EDMPrecond": (
        "img_resolution",
        "img_channels",
        "label_dim",
        "use_fp16",
        "sigma_min",
        "sigma_max",
        "sigma_data",
        "model_type",
    ),
    "VPPrecond": (
        "img_resolution",
        "img_channels",
        "label_dim",
        "use_fp16",
        "beta_d",
        "beta_min",
        "M",
        "epsilon_t",
        "model_type",
    ),
    "VEPrecond": (
        "img_resolution",
        "img_channels",
        "label_dim",
        "use_fp16",
        "sigma_min",
        "sigma_max",
        "model_type",
    ),
    "iDDPMPrecond": (
        "img_resolution",
        "img_channels",
        "label_dim",
        "use_fp16",
        "C_1",
        "C_2",
        "M",
        "model_type",
    ),
}

_MAX_DEPTH = 64  # deepest module nesting accepted (EDM's networks are 3 levels deep)


# ---------------------------------------------------------------------------------------------
# Inert records that stand in for the classes named in the file.


@dataclass
class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` leaves behind: a name and a state, no code."""

    class_name: str
    state: dict[str, Any]
    version: int
    module_src_sha256: str


class _TorchModuleRecord:
    """Stand-in for a plain ``torch.nn`` container pickled by class: keeps the state it is given."""

    class_name = "Module"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UserError(f"bad state for pickled torch.nn.{self.class_name}: not a dict")
        self.state = state


def _module_record(name: str) -> type[_TorchModuleRecord]:
    return type(name, (_TorchModuleRecord,), {"class_name": name})


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access): a plain dict here."""


class _NumpyDType:
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

    if not isinstance(dtype, _NumpyDType) or not isinstance(data, (bytes, bytearray)):
        raise UserError("refusing a numpy scalar in the pickle that is not a plain number")
    np_dtype = np.dtype(dtype.spec).newbyteorder(dtype.byteorder)
    if len(data) != np_dtype.itemsize:
        raise UserError("bad numpy scalar in the pickle: wrong number of bytes")
    return np.frombuffer(bytes(data), dtype=np_dtype)[0].item()


# ---------------------------------------------------------------------------------------------
# The allow-list.

_DTYPE_NAMES = frozenset(
    name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)
)

_ALLOWED: dict[tuple[str, str], Any] = {
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
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class EDMUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the allow-listed globals, each to an inert stand-in.

    It is Python's pure-Python unpickler (fast enough: a checkpoint is a few thousand opcodes
    around large byte strings) so that BUILD, which sets an object's state, can be limited to
    our own record types: a file cannot set attributes on classes, functions or tensors.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, (_TorchModuleRecord, _NumpyDType)):
            inst.__setstate__(state)
        elif not (state is None or (isinstance(state, (dict, tuple)) and len(state) == 0)):
            raise UserError(
                f"refusing to set the state of a {type(inst).__name__} object in the pickle"
            )

    dispatch[pickle.BUILD[0]] = _load_build

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is not None:
            return target
        if module == "torch" and name in _DTYPE_NAMES:
            return getattr(torch, name)
        raise UserError(
            f"refusing global {module}.{name} in the pickle: not on the EDM checkpoint allow-list"
            " (the file is not an EDM checkpoint, or it tries to run code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UserError("refusing a persistent id in the pickle: EDM checkpoints contain none")


# ---------------------------------------------------------------------------------------------
# From the unpickled records to a state dict and constructor arguments.


@dataclass
class EDMCheckpoint:
    """One network read from an EDM pickle (or from a converted file).

    class_name: top-level class, e.g. ``'EDMPrecond'``.
    init_kwargs: its constructor arguments (``_init_args`` named and merged with
        ``_init_kwargs``), including ``model_type`` and the underlying model's keyword arguments.
    state_dict: flat ``{'model.enc.32x32_conv.weight': tensor, ...}`` as ``module.state_dict()``
        names it: parameters and persistent buffers, recursively through child modules.
    key: the entry of the pickled dict that was read (``'ema'``); None for a bare network.
    model_class_name, model_init_kwargs: the child ``model`` (e.g. ``'SongUNet'``), if recorded.
    num_params: number of parameter elements (buffers excluded).
    """

    class_name: str
    init_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    key: str | None = "ema"
    model_class_name: str | None = None
    model_init_kwargs: dict[str, Any] | None = None
    num_params: int = 0
    module_src_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any, where: str) -> Any:
    """Constructor arguments as JSON-compatible Python values (tuples become lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UserError(f"unsupported constructor argument key {k!r} in {where}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise UserError(f"unsupported constructor argument {where} of type {type(value).__name__}")


def _init_kwargs(record: PersistentRecord, where: str) -> dict[str, Any]:
    state = record.state
    args = state.get("_init_args") or ()
    kwargs = state.get("_init_kwargs")
    if kwargs is None:
        raise UserError(
            f"{where} ({record.class_name}) was pickled without its constructor arguments"
        )
    if not isinstance(kwargs, dict) or not isinstance(args, (tuple, list)):
        raise UserError(f"{where} ({record.class_name}) has malformed constructor arguments")
    merged: dict[str, Any] = {}
    if args:
        names = _POSITIONAL_PARAMS.get(record.class_name)
        if names is None or len(args) > len(names):
            raise UserError(
                f"{where} ({record.class_name}) has {len(args)} positional constructor arguments"
                " that cannot be named"
            )
        merged.update(zip(names[: len(args)], args, strict=True))
    for k in kwargs:
        if k in merged:
            raise UserError(f"{where} ({record.class_name}) gives argument {k!r} twice")
    merged.update(kwargs)
    return _plain(merged, f"{where}.init_kwargs")


def _module_state(obj: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(obj, PersistentRecord):
        return obj.class_name, obj.state
    if isinstance(obj, _TorchModuleRecord) and hasattr(obj, "state"):
        return obj.class_name, obj.state
    raise UserError(f"{where} is not a network module (found {type(obj).__name__})")


def _collect(
    obj: Any,
    prefix: str,
    out: dict[str, torch.Tensor],
    param_keys: set[str],
    depth: int,
    seen: set[int],
) -> None:
    where = prefix[:-1] or "the network"
    if depth > _MAX_DEPTH or id(obj) in seen:
        raise UserError(f"{where}: module tree is cyclic or deeper than {_MAX_DEPTH} levels")
    seen = seen | {id(obj)}
    class_name, state = _module_state(obj, where)
    params = state.get("_parameters", {})
    buffers = state.get("_buffers", {})
    modules = state.get("_modules", {})
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    if not all(isinstance(d, dict) for d in (params, buffers, modules)):
        raise UserError(f"{where} ({class_name}) has malformed parameters, buffers or children")
    for kind, entries in (("parameter", params), ("buffer", buffers)):
        for name, tensor in entries.items():
            if tensor is None or (kind == "buffer" and name in non_persistent):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise UserError(f"{prefix}{name} ({kind}) is a {type(tensor).__name__}")
            out[prefix + name] = tensor.detach()
            if kind == "parameter":
                param_keys.add(prefix + name)
    for name, child in modules.items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", out, param_keys, depth + 1, seen)


def _unpickle(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        with open(path, "rb") as f:
            return EDMUnpickler(f).load()
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    except Exception as e:  # any failure on untrusted bytes is bad input, reported on one line
        raise UserError(f"{path} is not a readable EDM pickle ({type(e).__name__}: {e})") from None


def read_edm_pickle(path: str | Path, key: str = "ema") -> EDMCheckpoint:
    """Read one network from an ``edm-*.pkl`` without importing or executing anything from it.

    Args:
        path: the pickle (a dict with ``'ema'``, ``'loss_fn'``, ... or a bare persistent network).
        key: which entry of the dict to read.

    Returns:
        The class name, constructor arguments and flat state dict of that network.

    Raises:
        UserError: missing file, not a pickle, a refused global, or no network under ``key``.
    """
    path = Path(path)
    top = _unpickle(path)
    used_key: str | None = key
    extra: dict[str, Any] = {}
    if isinstance(top, PersistentRecord):
        net, used_key = top, None
    elif isinstance(top, dict):
        if key not in top:
            keys = ", ".join(repr(k) for k in top) or "none"
            raise UserError(f"{path} has no entry {key!r} (entries: {keys})")
        net = top[key]
        if isinstance(top.get("dataset_kwargs"), dict):
            try:
                extra["dataset_kwargs"] = _plain(top["dataset_kwargs"], "dataset_kwargs")
            except UserError:
                pass
    else:
        raise UserError(f"{path} holds a {type(top).__name__}, not an EDM checkpoint dict")
    where = f"{path}[{used_key!r}]" if used_key is not None else str(path)
    if not isinstance(net, PersistentRecord):
        raise UserError(f"{where} is not a persistent network (found {type(net).__name__})")

    state_dict: dict[str, torch.Tensor] = {}
    param_keys: set[str] = set()
    _collect(net, "", state_dict, param_keys, 0, set())
    init_kwargs = _init_kwargs(net, where)

    model_class_name = model_init_kwargs = None
    modules = net.state.get("_modules")
    child = modules.get("model") if isinstance(modules, dict) else None
    if isinstance(child, PersistentRecord):
        model_class_name = child.class_name
        if child.state.get("_init_kwargs") is not None:
            model_init_kwargs = _init_kwargs(child, f"{where}.model")

    return EDMCheckpoint(
        class_name=net.class_name,
        init_kwargs=init_kwargs,
        state_dict=state_dict,
        key=used_key,
        model_class_name=model_class_name,
        model_init_kwargs=model_init_kwargs,
        num_params=sum(state_dict[k].numel() for k in param_keys),
        module_src_sha256=net.module_src_sha256,
        extra=extra,
    )
