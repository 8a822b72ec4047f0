"""Training monitors: sample grids from fixed seeds (samples/step-XXXXXXXX.png), sane samples and losses, divergence."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from odedistill.errors import TrainingDiverged, UserError
from odedistill.infra import pictures
from odedistill.infra.checkpoint import retire_checkpoints
from odedistill.models.base import TrajectoryModel, output_problem
from odedistill.systems.base import ODESystem
from odedistill.systems.probe import check_along

#: the run (``odedistill.training.trainer.Trainer``, which imports this module: named here
#: without importing it)
Trainer = Any


#: a finite loss above this many times the first loss of the run (or of its resumption) has
#: exploded: the weights that gave it are not kept
LOSS_EXPLODED = 1e4


@torch.no_grad()
def write_sample_grid(
    model: TrajectoryModel,
    system: ODESystem,
    path: Path,
    seed: int,
    grid_size: int = 8,
    n_points: int = 1000,
    batch: int = 64,
) -> Path | None:
    """One-step samples from fixed seeds: an image grid, or a 2-D scatter; None for other states.

    The initial states (and class labels) come from a generator seeded with ``seed``, so
    every grid of a run shows the same z.
    """
    if system.is_image:
        n = grid_size**2
    elif system.dim == 2:
        n = n_points
    else:
        return None
    gen = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, gen)
    cond = system.sample_condition(n, gen)
    device = next(model.parameters()).device
    xs = []
    for start in range(0, n, batch):
        c = None if cond is None else cond[start : start + batch].to(device)
        xs.append(model.sample(z[start : start + batch].to(device), c).float().cpu())
    x = torch.cat(xs)
    if system.is_image:
        scale = max(1, 256 // (grid_size * system.state_shape[-1]))
        return pictures.save_image_grid(x.clamp(-1, 1), path, cols=grid_size, scale=scale)
    panels = {f"student, 1 step ({path.stem})": x}
    try:
        panels["data"] = system.sample_data(n, gen).float()
    except NotImplementedError:
        pass
    return pictures.plot_2d(panels, path)


@torch.no_grad()
def gives_finite_samples(model: TrajectoryModel, system: ODESystem, seed: int, n: int = 4) -> bool:
    """Whether every weight of ``model`` is finite and its samples of ``n`` fixed z are sane
    (finite and not exploded: ``output_problem``)."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return False
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, gen).to(device)
    cond = system.sample_condition(n, gen)
    training = model.training
    model.eval()
    try:
        x = model.sample(z, None if cond is None else cond.to(device))
    finally:
        model.train(training)
    return output_problem(x, z) is None


class LossGuard:
    """Whether a step's loss is sane: finite and at most LOSS_EXPLODED times the first one."""

    def __init__(self) -> None:
        self.first: float | None = None

    def problem(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"loss became {loss}"
        if self.first is None:
            self.first = max(loss, 1e-12)
        elif loss > LOSS_EXPLODED * self.first:
            return (
                f"loss exploded to {loss:.3g} (over {LOSS_EXPLODED:g} times its first, "
                f"{self.first:.3g})"
            )
        return None


def diverged(trainer: Trainer, what: str, loss: bool = False) -> TrainingDiverged:
    """The error that stops a diverged run, with where to continue from.

    A loss that is not sane may come from the ODE: f is checked along probe paths and named
    when it is not finite. Otherwise the checkpoint of this step holds the weights that gave
    the loss: it is retired (renamed diverged-*.pt), so the last checkpoint is one whose
    following loss was still sane and ``--resume`` starts from it.
    """
    s = trainer.session
    if loss:
        try:
            check_along(s.system, s.grid, s.device)
        except UserError as e:
            what = f"{what}: the ODE failed, not the training: {e}"
            if trainer.last_checkpoint:
                return TrainingDiverged(f"{what}; the last checkpoint is {trainer.last_checkpoint}")
            return TrainingDiverged(what)
        if trainer.dist.is_main:
            trainer.last_checkpoint = retire_checkpoints(trainer.run_dir, trainer.step)
    where = (
        f"the last good checkpoint is {trainer.last_checkpoint}; continue from it with --resume "
        "and a lower optim.lr or an optim.grad_clip (both may change on resume)"
        if trainer.last_checkpoint
        else "no good checkpoint was written; run again with a lower optim.lr or an optim.grad_clip"
    )
    return TrainingDiverged(f"{what}; training stopped and {where}")
