"""The PID loss (Tee et al. 2024, eq. 9): L = E d( to_target(y, t, v), sg[target(y, t)] ), along any path.

For the probability-flow ODE, to_target(y, t, v) = y - t v and target(y, t) = D(y; t): the
student's denoised estimate against the teacher's. The path is the student's trajectory
t ↦ x_theta(z, t) (PID) or a flow map's t ↦ X(x_s, s, t) (the Lagrangian residual).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from odedistill.distances import Distance
from odedistill.models.base import Path, TrajectoryModel
from odedistill.schemes.base import ResidualScheme
from odedistill.systems.base import ODESystem

Autocast = Callable[[], AbstractContextManager[Any]]


def residual_loss(
    path: Path,
    system: ODESystem,
    scheme: ResidualScheme,
    distance: Distance,
    grid: torch.Tensor,
    idx: torch.Tensor,
    cond: torch.Tensor | None = None,
    autocast: Autocast = contextlib.nullcontext,
) -> torch.Tensor:
    """Per-sample residual loss (B,) of ``path`` at collocation indices ``idx``.

    The point y = x(t_i) and its derivative v come from ``scheme`` and carry gradients; the
    teacher is evaluated at the detached point under ``torch.inference_mode`` (its output is
    cloned into a normal tensor so that autograd may save it). ``autocast`` wraps the teacher
    and the distance (mixed precision); the student's networks take care of their own.
    """
    t, y, v = scheme(path, grid, idx)
    pred = system.to_target(y, t, v)
    with torch.inference_mode(), autocast():
        target = system.target(y.detach(), t, cond)
    target = target.clone()  # an inference tensor cannot be saved for backward
    with autocast():
        return distance(pred, target.to(pred.dtype))


def pid_loss(
    model: TrajectoryModel,
    system: ODESystem,
    scheme: ResidualScheme,
    distance: Distance,
    grid: torch.Tensor,
    z: torch.Tensor,
    idx: torch.Tensor,
    cond: torch.Tensor | None = None,
    autocast: Autocast = contextlib.nullcontext,
) -> torch.Tensor:
    """Per-sample PID loss (B,) of the student's trajectories from ``z`` at indices ``idx``.

    For the probability-flow ODE this is d(y - t_i v, D(y; t_i)) with y = x_theta(z, t_i).
    """
    return residual_loss(model.path(z, cond), system, scheme, distance, grid, idx, cond, autocast)
