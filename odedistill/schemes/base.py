"""The ResidualScheme interface: a point of a path t ↦ x(t) at collocation times and its time derivative."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from odedistill.models.base import Path


class ResidualScheme(ABC):
    """Estimate dx/dt of a ``Path`` at collocation times t_i = grid[idx], one per sample.

    The path is any curve through the student: PID's x_theta(z, ·) from the initial states,
    or a flow map's X(x_s, s, ·) from source states. Subclasses declare their ``order`` of
    accuracy in the grid spacing, the number of path ``evaluations`` they cost per sample, and
    whether they ``needs_forward_ad``. With ``fused=True`` the evaluations of a batch run as one
    forward pass over the repeated batch.
    """

    order: ClassVar[float]
    evaluations: ClassVar[int]
    needs_forward_ad: ClassVar[bool] = False
    #: whether it differentiates at any time (fractional indices), not only on the grid
    continuous_times: ClassVar[bool] = False

    def __init__(self, fused: bool = True) -> None:
        self.fused = fused

    @abstractmethod
    def __call__(
        self, path: Path, grid: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(t, y, v)``: times t_i (B,), y = x(t_i), and v ~ dx/dt at t_i."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fused={self.fused})"
