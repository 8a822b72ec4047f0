"""Sample grids during training: one-step samples from fixed seeds, samples/step-XXXXXXXX.png."""

from __future__ import annotations

from pathlib import Path

import torch

from odedistill.infra import pictures
from odedistill.models.base import TrajectoryModel
from odedistill.systems.base import ODESystem


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
    """Whether every weight of ``model`` is finite and so are its samples of ``n`` fixed z."""
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
    return bool(torch.isfinite(x).all())
