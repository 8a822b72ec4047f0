"""Teacher denoisers D(x; σ, class_labels) from EDM pickles or their converted ``.safetensors``.

``convert`` reads an ``edm-*.pkl`` with the restricted reader of
:mod:`odedistill.teachers.edm_pickle`, checks that the class and state dict rebuild one of our
networks, and writes the weights as ``.safetensors`` with the class name and constructor
arguments as JSON in the file's metadata. ``load_teacher`` accepts either file and returns the
network in eval mode with gradients off. EDM's checkpoints are licensed CC BY-NC-SA 4.0 by
NVIDIA; converted files keep that licence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from odedistill._io import atomic_write
from odedistill.errors import UserError
from odedistill.teachers.edm_pickle import EDMCheckpoint, read_edm_pickle
from odedistill.teachers.precond import build_edm_module

__all__ = ["FORMAT", "FORMAT_VERSION", "convert", "load_teacher", "read_converted"]

FORMAT = "odedistill-teacher"
"""Value of the ``format`` metadata entry of a converted teacher file."""

FORMAT_VERSION = 1
"""Newest ``format_version`` this module writes and reads."""

_LICENCE = "EDM checkpoint by NVIDIA, CC BY-NC-SA 4.0; these weights keep that licence"


def _build(ckpt: EDMCheckpoint, device: str | torch.device) -> nn.Module:
    with torch.device(device):
        return build_edm_module(ckpt.class_name, ckpt.init_kwargs)


def _check_state_dict(net: nn.Module, ckpt: EDMCheckpoint) -> None:
    """Raise UserError unless the checkpoint has exactly the network's keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt.state_dict.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k} {got[k]} vs {expected[k]}" for k in expected if k in got and got[k] != expected[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    if problems:
        raise UserError(
            f"the checkpoint does not match {ckpt.class_name}"
            f" (model {ckpt.model_class_name or '?'}): {'; '.join(problems)}"
        )


def _instantiate(ckpt: EDMCheckpoint) -> nn.Module:
    """Build the network and load the weights, without a wasted random init when possible."""
    try:
        net = _build(ckpt, "meta")
    except UserError:
        raise
    except Exception:  # a constructor that computes on values cannot run on meta tensors
        net = None
    if net is not None:
        _check_state_dict(net, ckpt)
        net.load_state_dict(ckpt.state_dict, strict=True, assign=True)
        tensors = [*net.parameters(), *net.buffers()]
        if not any(t.is_meta for t in tensors):  # non-persistent buffers would stay on meta
            return net
    net = _build(ckpt, "cpu")
    _check_state_dict(net, ckpt)
    net.load_state_dict(ckpt.state_dict, strict=True)
    return net


def _check_network(ckpt: EDMCheckpoint) -> None:
    try:
        net = _build(ckpt, "meta")
    except UserError:
        raise
    except Exception:
        net = _build(ckpt, "cpu")
    _check_state_dict(net, ckpt)


def _metadata(ckpt: EDMCheckpoint, source: str, licence: str = _LICENCE) -> dict[str, str]:
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "class_name": ckpt.class_name,
        "init_kwargs": json.dumps(ckpt.init_kwargs),
        "num_params": str(ckpt.num_params),
        "source_file": source,
        "source_key": "" if ckpt.key is None else ckpt.key,
        "licence": licence,
    }
    if ckpt.model_class_name is not None:
        meta["model_class_name"] = ckpt.model_class_name
    if ckpt.model_init_kwargs is not None:
        meta["model_init_kwargs"] = json.dumps(ckpt.model_init_kwargs)
    if ckpt.module_src_sha256 is not None:
        meta["source_module_src_sha256"] = ckpt.module_src_sha256
    return meta


def _unshared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with no storage shared between keys, as safetensors requires."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, t in state_dict.items():
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or not t.is_contiguous() or t.untyped_storage().nbytes() != t.nbytes:
            t = t.contiguous().clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def convert(pkl_path: str | Path, out_path: str | Path, key: str = "ema") -> EDMCheckpoint:
    """Convert an ``edm-*.pkl`` to a ``.safetensors`` teacher file (written atomically).

    Args:
        pkl_path: the EDM pickle. Nothing in it is executed.
        out_path: the ``.safetensors`` file to write.
        key: entry of the pickle to convert (``'ema'``).

    Returns:
        The checkpoint that was written (class name, constructor arguments, weights).

    Raises:
        UserError: unreadable or refused pickle, unknown network class, or weights that do not
            match the network the constructor arguments describe.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise UserError(f"output must be a .safetensors file, not {out_path.name!r}")
    if out_path.is_dir():
        raise UserError(f"output {out_path} is a directory")
    ckpt = read_edm_pickle(pkl_path, key=key)
    _check_network(ckpt)
    _write(ckpt, out_path, Path(pkl_path).name)
    return ckpt


def _write(ckpt: EDMCheckpoint, out_path: Path, source: str, licence: str = _LICENCE) -> None:
    metadata = _metadata(ckpt, source, licence)
    tensors = _unshared(ckpt.state_dict)
    atomic_write(out_path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_teacher(
    net: nn.Module,
    out_path: str | Path,
    init_kwargs: dict[str, Any],
    class_name: str | None = None,
    licence: str = "",
) -> EDMCheckpoint:
    """Write a denoiser of our EDM classes (e.g. one you trained) as a teacher ``.safetensors``.

    ``init_kwargs`` are the constructor arguments that rebuild ``net`` through
    ``build_edm_module(class_name, init_kwargs)``; the file loads with :func:`load_teacher`.
    ``licence`` is stored in the metadata as given (the weights are the caller's, not EDM's).
    """
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise UserError(f"output must be a .safetensors file, not {out_path.name!r}")
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    ckpt = EDMCheckpoint(
        class_name=class_name or type(net).__name__,
        init_kwargs=json.loads(json.dumps(init_kwargs)),
        state_dict=state,
        key=None,
        num_params=sum(p.numel() for p in net.parameters()),
    )
    _check_network(ckpt)
    _write(ckpt, out_path, "odedistill.save_teacher", licence)
    return ckpt


def _json(meta: dict[str, str], name: str, path: Path) -> Any:
    try:
        return json.loads(meta[name])
    except (KeyError, ValueError) as e:
        raise UserError(f"{path}: metadata entry {name!r} is missing or not JSON") from e


def read_converted(path: str | Path) -> EDMCheckpoint:
    """Read a teacher file written by :func:`convert` (weights on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types on bad headers
        raise UserError(f"{path} is not a readable .safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise UserError(
            f"{path} is not an odedistill teacher file; make one with odedistill convert"
        )
    version = meta.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise UserError(
            f"{path} has teacher format version {version!r};"
            f" this odedistill reads versions up to {FORMAT_VERSION}"
        )
    init_kwargs = _json(meta, "init_kwargs", path)
    if not isinstance(init_kwargs, dict):
        raise UserError(f"{path}: metadata entry 'init_kwargs' is not a JSON object")
    model_init_kwargs = (
        _json(meta, "model_init_kwargs", path) if "model_init_kwargs" in meta else None
    )
    return EDMCheckpoint(
        class_name=meta.get("class_name", ""),
        init_kwargs=init_kwargs,
        state_dict=state_dict,
        key=meta.get("source_key") or None,
        model_class_name=meta.get("model_class_name"),
        model_init_kwargs=model_init_kwargs,
        num_params=int(meta["num_params"]) if meta.get("num_params", "").isdigit() else 0,
        module_src_sha256=meta.get("source_module_src_sha256"),
        extra={"source_file": meta.get("source_file"), "licence": meta.get("licence")},
    )


def load_teacher(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    key: str = "ema",
) -> nn.Module:
    """The teacher denoiser ``D(x, sigma, class_labels=None)`` from a ``.pkl`` or ``.safetensors``.

    Args:
        path: an ``edm-*.pkl`` (read without executing anything) or a file from :func:`convert`.
        device: where the network lives.
        dtype: cast floating-point weights to this dtype; None keeps the checkpoint's.
        key: entry of a pickle to read (``'ema'``); ignored for ``.safetensors``.

    Returns:
        The network in eval mode with ``requires_grad`` off on every parameter.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        ckpt = read_edm_pickle(path, key=key)
    elif path.suffix == ".safetensors":
        ckpt = read_converted(path)
    else:
        raise UserError(
            f"teacher must be an EDM .pkl or a converted .safetensors, not {path.name!r}"
        )
    net = _instantiate(ckpt)
    net = net.to(device=device) if dtype is None else net.to(device=device, dtype=dtype)
    return net.eval().requires_grad_(False)
