"""Load a DDPM-style teacher saved by diffusers' ``save_pretrained``: JSON configs and safetensors only.

A pipeline folder (``unet/`` and ``scheduler/``, with or without ``model_index.json``), its
``unet/`` folder, a UNet folder with the scheduler's ``scheduler_config.json`` beside it, or
a Hugging Face Hub id of such a model in the local cache. The configs are read
as JSON here; the weights through ``UNet2DModel.from_pretrained(..., use_safetensors=True,
local_files_only=True)`` after checking that a ``.safetensors`` file is there, so no pickle
is ever read and nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from odedistill.errors import UserError
from odedistill.teachers.diffusers import DiffusersDenoiser, import_diffusers

__all__ = ["load_diffusers_teacher"]

_WEIGHTS = "diffusion_pytorch_model.safetensors"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {_first_line(e)}") from e
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a diffusers config (a JSON object)")
    return config


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _find_folders(path: Path) -> tuple[Path, Path]:
    """(UNet folder, scheduler config file) of a pipeline folder or a UNet folder."""
    if (path / "model_index.json").is_file():
        unet, scheduler = path / "unet", path / "scheduler" / "scheduler_config.json"
        missing = [
            str(p.relative_to(path)) for p in (unet / "config.json", scheduler) if not p.is_file()
        ]
        if missing:
            raise UserError(
                f"{path} is a diffusers pipeline folder but lacks {', '.join(missing)}; "
                "save the pipeline with its UNet and scheduler (pipeline.save_pretrained)"
            )
        return unet, scheduler
    if (path / "unet" / "config.json").is_file() and (
        path / "scheduler" / "scheduler_config.json"
    ).is_file():  # the two parts saved side by side, without a pipeline's model_index.json
        return path / "unet", path / "scheduler" / "scheduler_config.json"
    if (path / "config.json").is_file():
        for scheduler in (
            path / "scheduler_config.json",
            path.parent / "scheduler" / "scheduler_config.json",
        ):
            if scheduler.is_file():
                return path, scheduler
        raise UserError(
            f"{path} holds a UNet but no scheduler config: put the scheduler's "
            f"scheduler_config.json in {path} or in {path.parent / 'scheduler'}"
        )
    raise UserError(
        f"{path} is not a diffusers folder: expected unet/ and scheduler/ (a pipeline, with or "
        "without model_index.json), or config.json with diffusion_pytorch_model.safetensors "
        "and a scheduler_config.json (a UNet)"
    )


def _refuse_bin(where: Path) -> UserError:
    return UserError(
        f"{where} has pickled .bin weights, which odedistill does not load "
        "(unpickling can run code); convert them once, where you trust the file, with "
        "UNet2DModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)"
    )


def _check_weights(unet_dir: Path) -> None:
    """Safetensors weights: one file, or a sharded index naming only .safetensors shards."""
    index = unet_dir / f"{_WEIGHTS}.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index} has no weight_map; save the UNet again with save_pretrained")
        shards = {str(v) for v in weight_map.values()}
        if any(not s.endswith(".safetensors") for s in shards):
            raise _refuse_bin(index)
        if any(Path(s).name != s for s in shards):
            raise UserError(f"{index} names shards outside {unet_dir}; it is damaged or foreign")
        return
    if (unet_dir / _WEIGHTS).is_file():
        return
    if any(unet_dir.glob("*.bin")):
        raise _refuse_bin(unet_dir)
    raise UserError(f"{unet_dir} has no {_WEIGHTS}")


def _looks_like_hub_id(text: str) -> bool:
    """'owner/name': two non-empty parts of Hub characters, not a relative path like './x'."""
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(p and p not in (".", "..") for p in parts)
        and all(c.isalnum() or c in "-_." for c in text.replace("/", ""))
    )


def resolve_hub_id(path: str | Path) -> Path:
    """``path`` itself when it exists, else the local snapshot of the Hugging Face Hub model it
    names (``owner/name``), found by ``huggingface_hub`` in its cache without any download."""
    path_ = Path(path)
    if path_.exists() or not _looks_like_hub_id(str(path)):
        return path_
    repo_id = str(path)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise UserError(
            f"{repo_id} is not a folder; to read it as a Hugging Face Hub id install "
            "huggingface_hub (pip install -e '.[diffusers]')"
        ) from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        raise UserError(
            f"{repo_id} is neither a folder nor a Hugging Face Hub model in the local cache; "
            f"download it once where there is network (hf download {repo_id}) or give a "
            "folder written by save_pretrained"
        ) from None


def load_diffusers_teacher(
    path: str | Path, device: str | torch.device = "cpu"
) -> DiffusersDenoiser:
    """Load a DDPM-style teacher written by diffusers' ``save_pretrained``.

    ``path`` is a pipeline folder (``unet/`` and ``scheduler/``, with or without
    ``model_index.json``), a Hugging Face Hub id ``owner/name`` of such a model already in
    the local cache (nothing is downloaded), or a UNet
    folder (``config.json``, ``diffusion_pytorch_model.safetensors``) with its scheduler's
    ``scheduler_config.json`` inside it or in a sibling ``scheduler/`` folder. Only
    ``UNet2DModel`` networks and safetensors weights are read. Returns the denoiser in eval
    mode with gradients off, on ``device``.
    """
    path = resolve_hub_id(path)
    if not path.is_dir():
        raise UserError(f"diffusers teacher folder {path} does not exist")
    unet_dir, scheduler_file = _find_folders(path)
    unet_config = _read_json(unet_dir / "config.json")
    class_name = unet_config.get("_class_name", "UNet2DModel")
    if class_name != "UNet2DModel":
        raise UserError(
            f"{unet_dir} holds a {class_name}; only UNet2DModel (pixel-space, unconditional "
            "or class-conditional) teachers are supported"
        )
    _check_weights(unet_dir)
    scheduler_config = _read_json(scheduler_file)
    diffusers = import_diffusers()
    try:
        unet = diffusers.UNet2DModel.from_pretrained(
            unet_dir, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False
        )
    except Exception as e:  # a damaged weights file or config: diffusers' own error types
        raise UserError(
            f"cannot load the UNet in {unet_dir} ({type(e).__name__}: {_first_line(e)}); "
            "save it again with save_pretrained"
        ) from e
    try:
        teacher = DiffusersDenoiser.from_scheduler_config(unet, scheduler_config)
    except (TypeError, ValueError) as e:
        raise UserError(f"{scheduler_file}: unusable scheduler config ({_first_line(e)})") from e
    return teacher.to(device).eval().requires_grad_(False)
