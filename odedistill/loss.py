"""The PID loss (Tee et al. 2024, eq. 9): L = E d( to_target(y, t, v), sg[target(y, t)] )."""

from __future__ import annotations

import torch

from odedistill.distances import Distance
from odedistill.models.base import TrajectoryModel
from odedistill.schemes.base import ResidualScheme
from odedistill.systems.base import ODESystem


def pid_loss(
    model: TrajectoryModel,
    system: ODESystem,
    scheme: ResidualScheme,
    distance: Distance,
    grid: torch.Tensor,
    z: torch.Tensor,
    idx: torch.Tensor,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample PID residual loss (B,) at collocation indices ``idx``.

    The student point y = x_theta(z, t_i) and its derivative v come from ``scheme``; the
    teacher is evaluated at the detached student point without gradients. For the
    probability-flow ODE this is d(y - t_i v, D(y; t_i)).
    """
    t, y, v = scheme(model, grid, z, idx, cond)
    pred = system.to_target(y, t, v)
    with torch.no_grad():
        target = system.target(y.detach(), t, cond)
    return distance(pred, target.to(pred.dtype))
