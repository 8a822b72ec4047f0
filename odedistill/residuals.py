"""Eulerian and semigroup residuals of a flow map X(x_s, s, t), beside PID's Lagrangian one.

    Eulerian (in s, along the teacher's field):  r_E = d/dh X(x_s + h f(x_s, s), s + h, t) |_{h=0}
                                                     = ∂_s X + ∇_x X · f(x_s, s) = 0
    semigroup:                                   X(x_s, s, t) = X(X(x_s, s, u), u, t),  u ∈ [s, t]

The Eulerian loss is a pseudo-target one (continuous-time consistency models, Lu & Song 2024;
MeanFlow, Geng et al. 2025): with Δ = s − t and the target's shift g = Δ·r_E computed from
stopped weights θ⁻,

    L_E = d( X_θ(x_s, s, t),  sg[ X_θ(x_s, s, t) − ĝ ] ),      ĝ = g / (‖g‖ + c)  ('normalise')
                                                                 or g · min(1, c/‖g‖)  ('clip')

whose value is d(ĝ, 0) and whose gradient is that of ⟨ĝ, X_θ⟩ (for squared L2: 2 ĝ·∇_θ X_θ / D).
In average-velocity form X = x_s − Δ·u (``AverageVelocityFlowMap``) it is measured in u:
d(u_θ, sg[u_θ + r_E]), and u_θ + r_E = f(x_s, s) − Δ·du/dh is MeanFlow's target.
r_E comes from any residual scheme (``odedistill.schemes``) differentiating the line
h ↦ X(x_s + h λ f, s + h λ, t) at h = 0 with nodes (−δ, 0, δ): upwind is the forward difference,
central the centred one, autodiff one JVP; λ = |s − t_anchor| makes δ relative to the time.
The teacher is queried at the source (x_s, s) only, never at the student's output.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import nn

from odedistill._tensor import append_dims
from odedistill.distances import Distance
from odedistill.loss import Autocast
from odedistill.models.curve import Curve, centred_nodes
from odedistill.schemes.base import ResidualScheme
from odedistill.systems.base import ODESystem

#: X(x_s, s, t, cond) of a flow map (``FlowMap.transport``)
Transport = Callable[..., torch.Tensor]
#: the residual families of a flow-map student, in the order of ``student.residual_weights``
FAMILIES = ("lagrangian", "eulerian", "semigroup")
#: how the Eulerian target's shift g is tamed: as is, g/(‖g‖ + c), or its norm clipped at c
TANGENTS = ("raw", "normalise", "clip")


def characteristic(
    transport: Transport,
    x_s: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    f_s: torch.Tensor,
    lam: torch.Tensor,
    cond: torch.Tensor | None = None,
) -> Curve:
    """The line h ↦ X(x_s + h λ f_s, s + h λ, t) per sample: its derivative at h = 0 is λ·r_E."""

    def fn(h, x_s, s, dx, lam, t, cond):
        return transport(x_s + append_dims(h.to(x_s.dtype), x_s.ndim) * dx, s + h * lam, t, cond)

    dx = append_dims(lam.to(x_s.dtype), x_s.ndim) * f_s
    return Curve(fn, (x_s, s, dx, lam.to(s.dtype), t, cond))


def eulerian_tangent(
    transport: Transport,
    x_s: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    f_s: torch.Tensor,
    scheme: ResidualScheme,
    delta: float,
    t_anchor: float,
    cond: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(X(x_s, s, t), r_E) by ``scheme`` on the nodes (−δ, 0, δ) of the relative step h.

    The step in s is δ·|s − t_anchor| (so δ is relative on a log-spaced grid); the
    derivative is exact for autodiff, O(δ) for upwind (forward) and O(δ²) for central.
    """
    lam = (s.double() - t_anchor).abs().clamp_min(1e-12)
    curve = characteristic(transport, x_s, s, t, f_s, lam, cond)
    idx = torch.ones(x_s.shape[0], dtype=torch.long, device=x_s.device)
    _, y, v = scheme(curve, centred_nodes(delta).to(x_s.device), idx)
    return y, v / append_dims(lam.to(v.dtype), v.ndim)


def tame(g: torch.Tensor, mode: str = "raw", c: float = 0.1) -> torch.Tensor:
    """The target's shift g per sample: as is ('raw'), g/(‖g‖ + c) ('normalise', sCM's tangent
    normalisation) or g·min(1, c/‖g‖) ('clip'); ‖·‖ is the L2 norm of one sample."""
    if mode == "raw":
        return g
    norm = append_dims(g.flatten(1).norm(dim=1), g.ndim)
    if mode == "normalise":
        return g / (norm + c)
    if mode == "clip":
        return g * (c / norm.clamp_min(1e-30)).clamp(max=1.0)
    raise ValueError(f"unknown tangent mode {mode!r}: one of {TANGENTS}")


def eulerian_loss(
    transport: Transport,
    system: ODESystem,
    scheme: ResidualScheme,
    distance: Distance,
    x_s: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    delta: float = 1e-3,
    t_anchor: float = 0.0,
    tangent: str = "raw",
    tangent_c: float = 0.1,
    velocity: Transport | None = None,
    scale: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    autocast: Autocast = contextlib.nullcontext,
    through: bool = False,
) -> torch.Tensor:
    """Per-sample Eulerian loss (B,) of a flow map at sources (x_s, s) and targets t (module doc).

    r_E is computed without gradient (θ⁻ = sg θ, sCM's stop-gradient) and X_θ once more with
    it. The shift is g = λ·r_E, λ = ``scale`` (per sample; default Δ = s − t).
    ``velocity`` (u_θ(x_s, s, t, cond) of an average-velocity map) measures the loss in u:
    d(u_θ, sg[u_θ + ĝ]) with g = r_E. ``beta`` (per sample, ∂X/∂NN of a map X = α x_s + β NN)
    measures it in the network's output: d((X_θ − sg X_θ)/β, −ĝ) with g = λ·r_E/β, for
    distances of a − b alone (squared L2, pseudo-Huber). ``through``: no stop-gradient,
    d(ĝ, 0) differentiated through the scheme (the plain residual's full gradient).
    """
    x_s = x_s.detach()
    with torch.inference_mode(), autocast():
        f_s = system.f(x_s, s, cond)
    f_s = f_s.clone().to(x_s.dtype)  # an inference tensor cannot be saved for backward
    in_u = velocity is not None
    with contextlib.nullcontext() if through else torch.no_grad():
        _, r = eulerian_tangent(transport, x_s, s, t, f_s, scheme, delta, t_anchor, cond)
        if in_u:
            g = r
        else:
            lam = (s - t) if scale is None else scale
            g = append_dims(lam.to(r.dtype), r.ndim) * r
            if beta is not None:
                g = g / append_dims(beta.to(r.dtype), r.ndim)
        g = tame(g, tangent, tangent_c)
    if through:
        with autocast():
            return distance(g, torch.zeros_like(g))
    if in_u:
        pred = velocity(x_s, s, t, cond)
        target = pred.detach() + g
    elif beta is None:
        pred = transport(x_s, s, t, cond)
        target = pred.detach() - g
    else:
        X = transport(x_s, s, t, cond)
        pred = (X - X.detach()) / append_dims(beta.to(X.dtype), X.ndim)
        target = -g
    with autocast():
        return distance(pred, target.to(pred.dtype))


def semigroup_loss(
    transport: Transport,
    distance: Distance,
    x_s: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    frac: torch.Tensor,
    cond: torch.Tensor | None = None,
    autocast: Autocast = contextlib.nullcontext,
) -> torch.Tensor:
    """Per-sample semigroup loss d(X_θ(x_s, s, t), sg[X(X(x_s, s, u), u, t)]) (B,),
    u = s + frac·(t − s) with frac ∈ [0, 1] per sample.

    The two-jump target is stopped (as shortcut models and progressive distillation do):
    the long jump learns from the composed short ones. The identity map satisfies this
    equation too, so it trains only beside a Lagrangian or Eulerian term that pins the map
    to the ODE.
    """
    x_s = x_s.detach()
    u = s + frac.to(s.dtype) * (t - s)
    with torch.no_grad():
        target = transport(transport(x_s, s, u, cond), u, t, cond)
    pred = transport(x_s, s, t, cond)
    with autocast():
        return distance(pred, target.to(pred.dtype))


class AdaptiveWeight(nn.Module):
    """A learned log-weight w_φ(s, t) per sample: ℓ ↦ e^{−w} ℓ + w (sCM's adaptive weighting,
    Lu & Song 2024, in EDM2's sign convention).

    For fixed losses the minimum over w is w = log E[ℓ | s, t]: every (s, t) then contributes
    about 1, whatever the size of its residual. w_φ is linear in Fourier features
    cos(kπc/2), sin(kπc/2), k = 1 … F, of both time inputs c = c_noise(s), c_noise(t), and
    starts at 0 (weight 1). No random numbers are drawn.
    """

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.register_buffer(
            "freqs", torch.arange(1, features + 1, dtype=torch.float32) * (math.pi / 2)
        )
        self.weight = nn.Parameter(torch.zeros(4 * features))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, c_s: torch.Tensor, c_t: torch.Tensor) -> torch.Tensor:
        """w_φ (B,) from the two time inputs (B,)."""
        angles = torch.cat(
            [c_s.float()[:, None] * self.freqs, c_t.float()[:, None] * self.freqs], 1
        )
        phi = torch.cat([angles.cos(), angles.sin()], 1)
        return phi @ self.weight + self.bias

    def weigh(self, losses: torch.Tensor, c_s: torch.Tensor, c_t: torch.Tensor) -> torch.Tensor:
        """e^{−w} ℓ + w per sample."""
        w = self(c_s, c_t).to(losses.dtype)
        return torch.exp(-w) * losses + w
