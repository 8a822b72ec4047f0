"""Exact time derivative of the student by forward-mode AD: v = d x_theta(z, t) / dt via torch.func.jvp."""

from __future__ import annotations

import torch
from torch.func import jvp

from odedistill.models.attention import check_forward_ad_error, forward_ad_safe_attention
from odedistill.models.base import TrajectoryModel
from odedistill.schemes.base import ResidualScheme


class Autodiff(ResidualScheme):
    """One JVP with tangent 1 on t gives x_theta(z, t_i) and its exact derivative together.

    Parameter gradients flow through the JVP (reverse over forward mode). Attention runs on
    the math backend inside the JVP, since fused kernels have no forward-mode rule.
    Tee et al. (2024) report that this variant drifts to unphysical, high-contrast images.
    """

    name = "autodiff"
    order = float("inf")
    evaluations = 1
    needs_forward_ad = True

    def __call__(
        self,
        model: TrajectoryModel,
        grid: torch.Tensor,
        z: torch.Tensor,
        idx: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t_i = grid[idx].to(z.dtype)
        try:
            with forward_ad_safe_attention():
                y, v = jvp(lambda t: model(z, t, cond), (t_i,), (torch.ones_like(t_i),))
        except (NotImplementedError, RuntimeError) as e:
            check_forward_ad_error(e)
        return t_i, y, v
