"""Checkpoints written atomically and read with ``torch.load(weights_only=True)`` (no code runs).

A checkpoint's checksum covers everything it holds (weights, EMAs, optimiser state, RNG
streams, config, student description): any change after writing is refused on reading.
"""

from __future__ import annotations

import errno
import hashlib
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


CHECKPOINT_FORMAT = "odedistill-checkpoint-2"
_REQUIRED = ("step", "model", "ema", "optimizer", "rng", "config", "student")


def _digest(h: Any, obj: Any) -> None:
    """Feed a canonical encoding of ``obj`` (nested dicts, lists, tensors, scalars) to ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            h.update(f"K{key!r}".encode())
            _digest(h, obj[key])
    elif isinstance(obj, list | tuple):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _digest(h, item)
    else:
        h.update(f"S{type(obj).__name__}:{obj!r}".encode())


def state_checksum(state: dict[str, Any]) -> str:
    """SHA-256 of everything a checkpoint holds except its ``checksums`` entry."""
    h = hashlib.sha256()
    _digest(h, {k: v for k, v in state.items() if k != "checksums"})
    return h.hexdigest()


def checksums(state: dict[str, Any]) -> dict[str, Any]:
    """The checksums a checkpoint stores: one over everything it holds (``verify_state``)."""
    return {"all": state_checksum(state)}


def verify_state(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose content (any part of it) does not match its checksum."""
    stored = state.get("checksums")
    expected = stored.get("all") if isinstance(stored, dict) else None
    if expected is None:
        raise UserError(f"{path} has no checksum of its content; it is damaged or foreign")
    if state_checksum(state) != expected:
        raise UserError(
            f"{path} is damaged: its content does not match its checksum; use an earlier "
            "checkpoint of the run (checkpoints/) or retrain"
        )


def stored_weights(state: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
    """The weights ``name`` ('raw' or 'ema<rate>') of a checkpoint read by ``load_checkpoint``,
    which has already checked the whole content, these weights included, against its checksum."""
    return state["model"] if name == "raw" else state["ema"][name[3:]]


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 0


def _save(state: dict[str, Any], tmp: str) -> None:
    # through a Python file, so that a full disk raises OSError(ENOSPC), not a RuntimeError
    with open(tmp, "wb") as f:
        torch.save(state, f)


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` (with checksums) as ckpt-<step>.pt atomically, keeping ``keep`` in all.

    Older checkpoints beyond ``keep - 1`` are removed *before* the new one is written, so a
    full disk still holds the newest complete checkpoint and the room the next one needs.
    """
    path = checkpoint_path(run_dir, step)
    state = {**state, "format": CHECKPOINT_FORMAT}
    state["checksums"] = checksums(state)
    for _, old in [c for c in list_checkpoints(run_dir) if c[0] != step][: -(keep - 1) or None]:
        old.unlink(missing_ok=True)
    try:
        atomic_write(path, lambda tmp: _save(state, tmp))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        need = _nbytes(state) / 2**20
        then = (
            "free space there (the previous checkpoint is intact) and --resume"
            if latest_checkpoint(run_dir) is not None
            else "free space there and run again"
        )
        raise UserError(
            f"disk full: {max(need, 0.1):.1f} MB needed in {path.parent} for the checkpoint of "
            f"step {step}; {then}"
        ) from None
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def retire_checkpoints(run_dir: Path, from_step: int) -> Path | None:
    """Rename the checkpoints of step >= ``from_step`` to diverged-<step>.pt (kept to inspect,
    never resumed from) and return the newest checkpoint left, or None."""
    for step, path in list_checkpoints(run_dir):
        if step >= from_step:
            path.replace(path.with_name(f"diverged-{step:08d}.pt"))
    return latest_checkpoint(run_dir)


def remove_stale_temps(run_dir: Path) -> list[Path]:
    """Delete the temporary files of writes that a killed process left (``.NAME.XXXX.tmp``)."""
    found = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                if p.is_file():
                    p.unlink(missing_ok=True)
                    found.append(p)
    return found


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a training checkpoint without executing code (tensors, dicts, lists and numbers).

    With ``mmap`` the tensors stay in the file until they are used. A file that is not a
    complete odedistill checkpoint is a ``UserError``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise UserError(f"{path}: not a readable odedistill checkpoint ({type(e).__name__})") from e
    missing = [k for k in _REQUIRED if not isinstance(state, dict) or k not in state]
    if missing or state.get("format") != CHECKPOINT_FORMAT:
        what = f"it lacks {', '.join(missing)}" if missing else "unknown format"
        raise UserError(
            f"{path} is not an odedistill training checkpoint of this version ({what}); "
            "use a checkpoint written by 'odedistill run'"
        )
    if not isinstance(state["model"], dict) or not isinstance(state["ema"], dict):
        raise UserError(f"{path} is damaged: its weights are not state dicts")
    verify_state(state, path)
    return state


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
