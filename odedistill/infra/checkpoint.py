"""Checkpoints written atomically and read with ``torch.load(weights_only=True)`` (no code runs)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from odedistill._io import atomic_write
from odedistill.errors import UserError

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``run_dir``, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as ckpt-<step>.pt atomically, then drop all but the ``keep`` newest."""
    path = checkpoint_path(run_dir, step)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint without executing code (tensors, dicts, lists and numbers only).

    With ``mmap`` the tensors stay in the file until they are used.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise UserError(f"{path}: not a readable odedistill checkpoint ({type(e).__name__})") from e


def select_checkpoints(run_dir: str | Path, spec: str | int = "all") -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints ``spec`` names: 'all', 'latest' or a comma list of steps."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run directory at {run_dir}")
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir} holds no checkpoint (checkpoints/ckpt-XXXXXXXX.pt)")
    spec = str(spec).replace(" ", "")
    if spec == "all":
        return found
    if spec == "latest":
        return found[-1:]
    by_step = dict(found)
    picked = []
    for item in spec.split(","):
        if not item.isdigit():
            raise UserError(f"--ckpt expects 'all', 'latest' or steps like 1000,2000, got {spec!r}")
        if int(item) not in by_step:
            have = ", ".join(str(s) for s, _ in found)
            raise UserError(f"{run_dir} has no checkpoint of step {item}; it has {have}")
        picked.append((int(item), by_step[int(item)]))
    return picked
