"""The PID loss (Tee et al. 2024, eq. 9): L = E d( to_target(y, t, v), sg[target(y, t)] ), along any path; causal weights.

For the probability-flow ODE, to_target(y, t, v) = y - t v and target(y, t) = D(y; t): the
student's denoised estimate against the teacher's. The path is the student's trajectory
t ↦ x_theta(z, t) (PID) or a flow map's t ↦ X(x_s, s, t) (the Lagrangian residual).
With ``through=True`` the stop-gradient goes: L = E d(to_target(y, t, v), target(y, t)), the
full gradient of the plain residual |dx/dt − f(x, t)|² (a PINN's loss), which is what trains a
cheap user ODE (DESIGN.md section 6).
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
    through: bool = False,
) -> torch.Tensor:
    """Per-sample residual loss (B,) of ``path`` at collocation indices ``idx``.

    The point y = x(t_i) and its derivative v come from ``scheme`` and carry gradients; the
    teacher is evaluated at the detached point under ``torch.inference_mode`` (its output is
    cloned into a normal tensor so that autograd may save it). ``autocast`` wraps the teacher
    and the distance (mixed precision); the student's networks take care of their own.
    With ``through`` the teacher is evaluated at y itself and the gradient flows through it.
    """
    t, y, v = scheme(path, grid, idx)
    pred = system.to_target(y, t, v)
    if through:
        with autocast():
            return distance(pred, system.target(y, t, cond).to(pred.dtype))
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
    through: bool = False,
) -> torch.Tensor:
    """Per-sample PID loss (B,) of the student's trajectories from ``z`` at indices ``idx``.

    For the probability-flow ODE this is d(y - t_i v, D(y; t_i)) with y = x_theta(z, t_i).
    """
    path = model.path(z, cond)
    return residual_loss(path, system, scheme, distance, grid, idx, cond, autocast, through)


class CausalWeights:
    """Causal weighting of a residual along time (Wang, Sankaran & Perdikaris 2022), for random indices.

        w_i = exp(−(ε/N) Σ_{k<i} R_k),   R_k ← β R_k + (1 − β) mean{ℓ_b / f2 : i_b = k}

    R_k is the running per-index loss over the residual scale ``f2`` of the system (1 before
    index k is first drawn; set to the batch mean on its first visit). Index i's loss counts
    only once the earlier times are fitted. The weights carry no gradient; ε = 0 gives w = 1.
    """

    def __init__(self, N: int, eps: float, f2: float, beta: float = 0.9) -> None:
        self.N, self.eps, self.f2, self.beta = int(N), float(eps), float(f2), float(beta)
        self.running = torch.ones(self.N, dtype=torch.float64)
        self.seen = torch.zeros(self.N, dtype=torch.bool)

    @torch.no_grad()
    def update(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        """Fold a batch's per-sample losses (B,) at indices ``idx`` (B,) into R."""
        idx = idx.detach().cpu().long()  # the grid interval of a continuous time
        lhat = losses.detach().double().cpu() / self.f2
        total = torch.zeros(self.N, dtype=torch.float64).index_add_(0, idx, lhat)
        count = torch.zeros(self.N, dtype=torch.float64).index_add_(0, idx, torch.ones_like(lhat))
        hit = count > 0
        mean = total[hit] / count[hit]
        first = ~self.seen[hit]
        blended = self.beta * self.running[hit] + (1 - self.beta) * mean
        self.running[hit] = torch.where(first, mean, blended)
        self.seen |= hit

    @torch.no_grad()
    def weights(self) -> torch.Tensor:
        """w_i for i = 0 … N−1 (float64, on the CPU)."""
        before = torch.cumsum(self.running, 0) - self.running
        return torch.exp(-self.eps * before / self.N)

    def __call__(self, idx: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Update R with this batch, then return the weighted per-sample losses w_{i_b} ℓ_b
        (a continuous position u counts as index ⌊u⌋)."""
        idx = idx.long()
        self.update(idx, losses)
        w = self.weights().to(device=losses.device, dtype=losses.dtype)
        return w[idx] * losses

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"running": self.running.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.running = state["running"].to(torch.float64).clone()
        self.seen = state["seen"].to(torch.bool).clone()
