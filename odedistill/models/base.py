"""The TrajectoryModel interface: x_theta(z, t, cond), the solution of an ODE from x(t_start) = z."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn


class TrajectoryModel(nn.Module):
    """A network that is a whole solution trajectory: ``x(z, t, cond)`` for per-sample t (B,).

    Implementations build the boundary condition ``x(z, t_start) = z`` into their form so that
    it holds exactly, for every parameter value. One-step sampling is ``x(z, t_end)``.
    """

    t_start: float
    t_end: float

    @abstractmethod
    def forward(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The state at times ``t`` (B,) of the trajectories that start at ``z``."""

    def sample(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """One-step solution: ``x(z, t_end)``."""
        t = torch.full((z.shape[0],), self.t_end, device=z.device, dtype=z.dtype)
        return self(z, t, cond)
