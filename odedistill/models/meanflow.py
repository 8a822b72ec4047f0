"""The average-velocity flow map (MeanFlow, Geng et al. 2025): X(x_s, s, t) = x_s − (s − t)·u_θ(x_s, s, t).

    u_θ(x_s, s, t) = NN(c_in(s)·x_s, c_noise(t), c_noise(s), cond)

u is the mean of the velocity over [t, s] along the solution through x_s:
u = (1/(s − t)) ∫_t^s f(x(τ), τ) dτ. X(x, s, s) = x holds exactly for every weight, as for
``FlowMap``, whose form w·x_s + (1 − w)·F is this one with u = (x_s − F)/(s − t_anchor): the two
differ only in what the network outputs (a velocity here, an endpoint estimate there).
"""

from __future__ import annotations

import torch

from odedistill._tensor import append_dims
from odedistill.models.flowmap import FlowMap


class AverageVelocityFlowMap(FlowMap):
    """A two-time flow map whose network is the average velocity u_θ (no skip term).

    Args as ``FlowMap`` (``param`` gives c_in(s) and c_noise; its anchor is not used by the map).
    """

    #: what the network outputs (recorded in a checkpoint's student spec)
    output = "average_velocity"

    def average_velocity(
        self,
        x_s: torch.Tensor,
        s: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """u_θ(x_s, s, t) for per-sample times s and t (B,)."""
        return self.network_output(x_s, s, t, cond)

    def transport(
        self,
        x_s: torch.Tensor,
        s: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """X(x_s, s, t) = x_s − (s − t)·u_θ(x_s, s, t)."""
        u = self.average_velocity(x_s, s, t, cond)
        return x_s - append_dims((s - t).to(u.dtype), x_s.ndim) * u
