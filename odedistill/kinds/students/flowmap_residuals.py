"""Which residuals a flow-map student trains (``student.residual``, ``student.residual_weights``):

    ℓ = w_L·ℓ_Lagrangian + w_E·ℓ_Eulerian + w_S·ℓ_semigroup        (per sample)

the Lagrangian one PID's along t ↦ X(x_s, s, t) (``odedistill.residual_loss``), the Eulerian and
semigroup ones those of ``odedistill.residuals``, all at the same sources (x_s, s) and targets t.
The run's residual scheme differentiates the Eulerian line too (its step: ``student.fd_step``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.grids import times_at
from odedistill.kinds.base import Indices
from odedistill.residuals import FAMILIES, TANGENTS, eulerian_loss, semigroup_loss

OUTPUTS = ("map", "average_velocity")


@dataclass
class ResidualOptions:
    """The flow map's residual fields (the flow-map kind's config inherits them)."""

    residual: str = _f(
        "lagrangian",
        "the equation the map is trained on: 'lagrangian' (∂_t X = f(X, t), the teacher at the "
        "map's output, PID's), 'eulerian' (∂_s X + ∇_x X·f(x_s, s) = 0, the teacher at the "
        "source: consistency models, MeanFlow) or 'semigroup' (X(x_s, s, t) = "
        "sg X(X(x_s, s, u), u, t), with another residual's weight)",
        choices=FAMILIES,
    )
    residual_weights: list[float] = _f(
        [],
        "weights of the lagrangian, eulerian and semigroup losses, in that order, summed per "
        "sample (e.g. [1, 0, 0.5]); empty: weight 1 on student.residual alone",
        item=dict(lo=0, hi=1e6),
        max_len=3,
    )
    fd_step: float = _f(
        1e-3,
        "the Eulerian residual's finite-difference step δ, relative: s moves by δ|s − t_anchor| "
        "and x_s by as much times f (scheme.kind 'upwind': forward, 'central': centred; unused "
        "by 'autodiff')",
        lo=0,
        lo_open=True,
        hi=1,
    )
    tangent: str = _f(
        "raw",
        "the Eulerian target's shift g = (s − t)·r_E: as is ('raw'), g/(‖g‖ + c) "
        "('normalise', sCM's tangent normalisation) or its norm clipped at c ('clip')",
        choices=TANGENTS,
    )
    tangent_c: float = _f(0.1, "the c of student.tangent", lo=0, lo_open=True, hi=1e6)
    output: str = _f(
        "map",
        "what the network outputs: 'map' (an endpoint estimate F, X = w x_s + (1 − w) F) or "
        "'average_velocity' (MeanFlow's u, X = x_s − (s − t) u; no skip term; the Eulerian "
        "loss is then measured in u)",
        choices=OUTPUTS,
    )


def residual_weights(options: ResidualOptions) -> tuple[float, float, float]:
    """(w_L, w_E, w_S) of a recipe's residual fields."""
    if not options.residual_weights:
        return tuple(float(f == options.residual) for f in FAMILIES)  # type: ignore[return-value]
    return tuple(float(w) for w in options.residual_weights)  # type: ignore[return-value]


def check_residuals(options: ResidualOptions, source: str) -> None:
    """The residual fields agree: three weights, the named residual among them, and a term that
    pins the map to the ODE (the semigroup equation alone holds for the identity map)."""
    w = options.residual_weights
    if w and len(w) != 3:
        raise UserError(
            f"{source}: 'student.residual_weights' {w} needs three weights (lagrangian, "
            "eulerian, semigroup), e.g. [1, 0, 0.5], or [] for student.residual alone"
        )
    wL, wE, wS = residual_weights(options)
    if w and w[FAMILIES.index(options.residual)] <= 0:
        raise UserError(
            f"{source}: student.residual = '{options.residual}' has weight 0 in "
            f"student.residual_weights {w}: give it a positive weight or name another residual"
        )
    if options.output == "average_velocity" and getattr(options, "skip", "auto") == "edm":
        raise UserError(
            f"{source}: student.output = 'average_velocity' has no skip term: set "
            "student.skip = 'auto' or 'none'"
        )
    if wL <= 0 and wE <= 0:
        raise UserError(
            f"{source}: the semigroup residual alone is solved by the identity map: give the "
            "lagrangian or eulerian residual a positive weight in student.residual_weights "
            "(e.g. [1, 0, 0.5])"
        )


def with_midpoints(draw: Indices) -> Indices:
    """``draw`` followed by one fraction per sample, frac ~ U[0, 1] (the semigroup's u)."""

    def more(N: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        idx = draw(N, n, gen)
        return (*idx, torch.rand(n, generator=gen, dtype=torch.float64))

    return more


class ResidualMix:
    """The weighted residual losses of a flow-map objective at sources (x_s, s) and targets t_i."""

    def __init__(self, options: ResidualOptions, through: bool = False) -> None:
        self.weights = residual_weights(options)
        self.options = options
        self.through = through

    @property
    def plain(self) -> bool:
        """PID's Lagrangian residual alone (the objective's original path)."""
        return self.weights == (1.0, 0.0, 0.0)

    @property
    def midpoints(self) -> bool:
        return self.weights[2] > 0

    def __call__(self, model, parts, x_s, s, i, frac, cond, lagrangian) -> torch.Tensor:
        """w_L·lagrangian() + w_E·ℓ_E + w_S·ℓ_S per sample (``lagrangian``: PID's loss;
        ``parts``: the objective's system, scheme, distance, grid and autocast)."""
        system, scheme, distance, grid, autocast = parts
        wL, wE, wS = self.weights
        t = times_at(grid, i).to(x_s.dtype)
        o = self.options
        total = torch.zeros((), device=x_s.device)
        if wL > 0:
            total = total + wL * lagrangian().float()
        if wE > 0:
            velocity = model.average_velocity if o.output == "average_velocity" else None
            loss = eulerian_loss(
                model.transport,
                system,
                scheme,
                distance,
                x_s,
                s,
                t,
                cond,
                delta=o.fd_step,
                t_anchor=model.t_anchor,
                tangent=o.tangent,
                tangent_c=o.tangent_c,
                velocity=velocity,
                autocast=autocast,
                through=self.through,
            )
            total = total + wE * loss.float()
        if wS > 0:
            assert frac is not None
            loss = semigroup_loss(model.transport, distance, x_s, s, t, frac, cond, autocast)
            total = total + wS * loss.float()
        return total
