"""Exact derivative of a curve by forward-mode AD: v = dy(u)/du via torch.func.jvp."""

from __future__ import annotations

import torch
from torch.func import jvp

from odedistill.grids import times_at
from odedistill.models.attention import (
    check_forward_ad_error,
    forward_ad_safe_attention,
    load_jvp_decompositions,
)
from odedistill.models.curve import Curve
from odedistill.schemes.base import ResidualScheme


class Autodiff(ResidualScheme):
    """One JVP with tangent 1 on the variable u gives y(u_i) and its exact derivative together.

    The nodes may be continuous: fractional positions ``idx`` interpolate the grid
    (``odedistill.grids.times_at``), so no grid error remains in the residual. Along a
    direction (``models.curve.along``) this is the JVP of F in direction (dx, ds).

    Parameter gradients flow through the JVP (reverse over forward mode). Attention runs on
    the math backend inside the JVP, since fused kernels have no forward-mode rule.
    Tee et al. (2024) report that this variant drifts to unphysical, high-contrast images.
    """

    order = float("inf")
    evaluations = 1
    needs_forward_ad = True
    continuous_times = True

    def __call__(
        self, curve: Curve, grid: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u_i = times_at(grid, idx).to(curve.dtype)
        load_jvp_decompositions()
        try:
            with forward_ad_safe_attention():
                y, v = jvp(curve, (u_i,), (torch.ones_like(u_i),))
        except (NotImplementedError, RuntimeError) as e:
            check_forward_ad_error(e)
        return u_i, y, v
