"""The ResidualScheme interface: the student point x_theta(z, t_i) and its time derivative."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from odedistill.models.base import TrajectoryModel


class ResidualScheme(ABC):
    """Estimate dx_theta/dt at collocation times t_i = grid[idx] for a batch of initial states.

    Subclasses declare their ``order`` of accuracy in the grid spacing, the number of student
    ``evaluations`` they cost per sample, and whether they ``needs_forward_ad``. With
    ``fused=True`` the student evaluations of a batch run as one forward pass over the
    concatenated batch.
    """

    name: ClassVar[str]
    order: ClassVar[float]
    evaluations: ClassVar[int]
    needs_forward_ad: ClassVar[bool] = False

    def __init__(self, fused: bool = True) -> None:
        self.fused = fused

    @abstractmethod
    def __call__(
        self,
        model: TrajectoryModel,
        grid: torch.Tensor,
        z: torch.Tensor,
        idx: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(t, y, v)``: times t_i (B,), y = x_theta(z, t_i), and v ~ dy/dt."""

    def evaluate(
        self,
        model: TrajectoryModel,
        z: torch.Tensor,
        times: list[torch.Tensor],
        cond: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        """x_theta(z, t) for each per-sample time tensor in ``times``, fused into one pass or not."""
        if not self.fused or len(times) == 1:
            return [model(z, t, cond) for t in times]
        k = len(times)
        zz = torch.cat([z] * k)
        cc = None if cond is None else torch.cat([cond] * k)
        return list(model(zz, torch.cat(times), cc).chunk(k))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fused={self.fused})"
