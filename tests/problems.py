"""Test problems with exact answers: analytic trajectories and the Euler-step trajectory of Theorem 1."""

from __future__ import annotations

import torch

from odedistill.models.base import TrajectoryModel
from odedistill.solvers import euler
from odedistill.systems.base import ODESystem


class AnalyticTrajectory(TrajectoryModel):
    """x(z, t) = z * exp(-t / 30) + sin(t / 7) with exact derivative; no parameters but one scale."""

    def __init__(self, t_start: float = 80.0, t_end: float = 0.002) -> None:
        super().__init__()
        self.t_start, self.t_end = t_start, t_end
        self.scale = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, z, t, cond=None):
        tt = t.reshape(-1, *([1] * (z.ndim - 1)))
        return self.scale * (z * torch.exp(-tt / 30) + torch.sin(tt / 7))

    def derivative(self, z, t):
        tt = t.reshape(-1, *([1] * (z.ndim - 1)))
        return self.scale * (-z * torch.exp(-tt / 30) / 30 + torch.cos(tt / 7) / 7)


class GridTrajectory(TrajectoryModel):
    """A trajectory that takes given values at the grid times (looked up exactly), per sample.

    Built from the teacher's explicit Euler steps it is the student of PID's Theorem 1.
    """

    def __init__(self, grid: torch.Tensor, z: torch.Tensor, states: torch.Tensor) -> None:
        super().__init__()
        self.grid, self.z, self.states = grid, z, states  # states: (N, B, ...)
        self.t_start, self.t_end = float(grid[0]), float(grid[-1])

    @classmethod
    def euler(cls, system: ODESystem, grid: torch.Tensor, z: torch.Tensor) -> GridTrajectory:
        return cls(grid, z, euler(system, z, grid, return_trajectory=True))

    def forward(self, z, t, cond=None):
        assert z.shape[1:] == self.z.shape[1:]
        B = self.z.shape[0]
        k = z.shape[0] // B  # fused evaluations repeat the batch
        pos = (self.grid[:, None] - t.double()[None, :]).abs().argmin(0)  # either direction
        assert torch.equal(self.grid[pos].to(t.dtype), t), "time is not a grid point"
        rows = torch.arange(B).repeat(k)
        return self.states[pos, rows]
