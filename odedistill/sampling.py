"""One-step sampling from a trained run: rebuild the student from a checkpoint and evaluate x(z, t_end)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from odedistill._io import atomic_write_bytes
from odedistill.errors import UserError
from odedistill.evaluation import plots
from odedistill.models.base import TrajectoryModel
from odedistill.systems.base import ODESystem
from odedistill.training.checkpoint import latest_checkpoint, load_checkpoint
from odedistill.training.config import from_dict
from odedistill.training.loop import build_session


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its newest checkpoint) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise UserError(
                f"{path} holds no checkpoint; give a run directory with checkpoints/ "
                "or a .pt checkpoint file"
            )
        return ckpt
    if not path.is_file():
        raise UserError(f"no run directory or checkpoint at {path}")
    return path


def load_student(
    path: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
) -> tuple[TrajectoryModel, ODESystem]:
    """The student of a run and its system. ``weights``: 'ema' (first rate), 'raw' or a rate."""
    state = load_checkpoint(resolve_checkpoint(path), map_location=device)
    if "config" not in state or "model" not in state:
        raise UserError(f"{path} is not an odedistill training checkpoint")
    cfg = from_dict(json.loads(state["config"]), source=f"{path} (saved config)")
    session = build_session(cfg, torch.device(device))
    model = session.model
    if weights == "raw":
        model.load_state_dict(state["model"])
    else:
        emas = state.get("ema", {})
        if not emas:
            raise UserError("the run kept no EMA; use --weights raw")
        key = next(iter(emas)) if weights == "ema" else repr(float(weights))
        if key not in emas:
            raise UserError(
                f"no EMA with rate {weights} in the checkpoint; it has {', '.join(emas)}"
            )
        model.load_state_dict(emas[key])
    return model.eval().requires_grad_(False), session.system


@torch.no_grad()
def one_step_samples(
    model: TrajectoryModel, system: ODESystem, n: int, seed: int, batch: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(samples, z, cond) for ``n`` initial states drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, gen)
    cond = system.sample_condition(n, gen)
    dev = next(model.parameters()).device
    out = []
    for k in range(0, n, batch):
        c = None if cond is None else cond[k : k + batch].to(dev)
        out.append(model.sample(z[k : k + batch].to(dev), c).cpu())
    x = torch.cat(out)
    if system.is_image:
        x = x.clamp(-1, 1)
    return x, z, cond


def save_samples(
    path: str | Path, x: torch.Tensor, z: torch.Tensor, cond: torch.Tensor | None, system: ODESystem
) -> Path:
    """Write samples as .npz (samples, z, labels) or as a picture (.png)."""
    path = Path(path)
    if path.suffix == ".npz":
        arrays = {"samples": x.numpy(), "z": z.numpy()}
        if cond is not None:
            arrays["labels"] = cond.argmax(1).numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return atomic_write_bytes(path, buf.getvalue())
    if path.suffix == ".png":
        if system.is_image:
            return plots.save_image_grid(x, path, scale=4 if x.shape[-1] <= 16 else 1)
        if system.dim == 2:
            return plots.plot_2d({"student, 1 step": x}, path)
        raise UserError(f"a picture needs 2-D or image states, not {system.state_shape}; use .npz")
    raise UserError(f"unknown output type {path.suffix!r}; use .npz or .png")
