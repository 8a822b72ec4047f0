"""The ResidualScheme interface: a point of a curve u ↦ y(u) at nodes of its variable and its derivative dy/du."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from odedistill.models.curve import Curve


class ResidualScheme(ABC):
    """Estimate dy/du of a ``Curve`` at the nodes u_i = grid[idx] of its variable, one per sample.

    The curve is whatever the residual equation differentiates: in t, PID's x_θ(z, ·) from
    the initial states or a flow map's X(x_s, s, ·) from source states (the Lagrangian
    residual, on the collocation grid); in s, or along a direction (f, 1) in (x, s) (the
    Eulerian residual, on ``models.curve.centred_nodes``). The scheme knows nothing of the
    equation. Subclasses declare their ``order`` of accuracy in the node spacing, the number
    of curve ``evaluations`` they cost per sample, and whether they ``needs_forward_ad``. With
    ``fused=True`` the evaluations of a batch run as one forward pass over the repeated batch.
    """

    order: ClassVar[float]
    evaluations: ClassVar[int]
    needs_forward_ad: ClassVar[bool] = False
    #: whether it differentiates anywhere (fractional indices), not only at the nodes
    continuous_times: ClassVar[bool] = False

    def __init__(self, fused: bool = True) -> None:
        self.fused = fused

    @abstractmethod
    def __call__(
        self, curve: Curve, grid: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(u, y, v)``: the variable's values u_i (B,), y = y(u_i), and v ~ dy/du at u_i."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fused={self.fused})"
