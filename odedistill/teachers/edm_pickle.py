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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from odedistill.errors import UserError
from odedistill.safe_pickle import AllowListUnpickler, load_untrusted
from odedistill.teachers.edm_records import (
    ALLOWED,
    DTYPE_NAMES,
    NumpyDTypeRecord,
    PersistentRecord,
    TorchModuleRecord,
)

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


class EDMUnpickler(AllowListUnpickler):
    """Resolves only the EDM allow-list, each global to an inert stand-in (``edm_records``).

    State may be set (BUILD) only on our record types: a file cannot set attributes on
    classes, functions or tensors.
    """

    allowed = ALLOWED
    buildable = (TorchModuleRecord, NumpyDTypeRecord)

    def lookup(self, module: str, name: str) -> Any:
        if module == "torch" and name in DTYPE_NAMES:
            return getattr(torch, name)
        return self.allowed.get((module, name))

    def refusal(self, module: str, name: str) -> str:
        return (
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
    if isinstance(obj, TorchModuleRecord) and hasattr(obj, "state"):
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
    with open(path, "rb") as f:
        return load_untrusted(EDMUnpickler, f, str(path), "EDM pickle")


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
