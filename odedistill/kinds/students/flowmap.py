"""The flow-map student (``student.kind = "flowmap"``): X(x_s, s, t), sampled in 1 or more jumps.

Trained with the Lagrangian PID residual by default (the Eulerian and semigroup ones, and
weighted sums: ``student.residual``, ``flowmap_residuals``), data-free, from the student's own jumps. For a
source (x_s, s = t_k) and a target index i ≥ k the residual is PID's along the path
t ↦ X(x_s, s, t) (``odedistill.residual_loss``, any scheme). A fraction p_T of each batch keeps
s = t_start: the plain PID term. The other rows draw k from the inner points of the K-step
sub-grids the map is trained for and i up to the next point a sampler jumps to from there
(or both uniformly), and take x_s = sg X_θ(z, t_start, s): the student's own jump from noise
(or the EMA's, or the teacher's Euler steps along the grid), or, for a system with exact
marginals (an exact Gaussian-mixture teacher), a fresh exact draw x_s ~ p_s. A network teacher
has no exact marginals: its flow maps train from data-free sources only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from odedistill.distances import Distance
from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import Indices, ObjectiveParts, StudentKind
from odedistill.kinds.students.flowmap_residuals import (
    ResidualMix,
    ResidualOptions,
    attach_weight,
    check_residuals,
    with_midpoints,
)
from odedistill.loss import Autocast, residual_loss
from odedistill.models.flowmap import FlowMap, subgrid
from odedistill.models.meanflow import AverageVelocityFlowMap
from odedistill.models.parametrisation import Parametrisation, SkipScaling
from odedistill.schemes.base import ResidualScheme
from odedistill.solvers import euler
from odedistill.systems.base import ODESystem


@dataclass
class FlowMapConfig(ResidualOptions):
    p_T: float = _f(0.25, "fraction of each batch with s = t_start: the plain PID term", lo=0, hi=1)
    steps: list[int] = _f(
        [2, 4, 8],
        "the multi-step samplers the map is trained for and evaluated with: K steps on grid "
        "points round(m (N - 1) / K)",
        item=dict(lo=2, hi=1000),
    )
    sources: str = _f(
        "sampler",
        "where s is drawn: 'sampler' (the inner points of the steps' sub-grids, with t up to "
        "the next point a sampler jumps to) or 'uniform' (any grid point, t anywhere after it)",
        choices=("sampler", "uniform"),
    )
    source_state: str = _f(
        "student",
        "x_s = sg X(z, t_start, s) of the current 'student' (one extra forward, no gradient), "
        "of the first 'ema', the 'teacher''s Euler steps along the grid (exact on the grid, "
        "but up to N - 1 teacher calls per iteration), or an exact draw from the system's "
        "'marginal' p_s (exact teachers only: a Gaussian mixture's is the mixture with "
        "variances s_k^2 + s^2)",
        choices=("student", "ema", "teacher", "marginal"),
    )
    skip: str = _f(
        "auto",
        "the skip term inside the map, F = a(s) x_s + b(s) NN (identity plus a small "
        "correction from small s): 'auto' (the teacher's own c_skip, c_out where the system has "
        "them: EDM, VP, VE, diffusers; EDM's for an exact mixture), 'edm' (EDM's with "
        "system.sigma_data) or 'none'",
        choices=("auto", "edm", "none"),
    )

    anchor: str = _f(
        "auto",
        "where the weight w = (t - t_a)/(s - t_a) of x_s in X = w x_s + (1 - w) F vanishes: "
        "'auto' (the system's t_a, moved one interval past t_end where it is t_end itself, as "
        "for a general ODE: no jump then ends where the map is the bare network) or 'system' "
        "(the system's t_a as is)",
        choices=("auto", "system"),
    )


def flow_anchor(param: Parametrisation, system: ODESystem, mode: str) -> Parametrisation:
    """The parametrisation of a two-time map X = w x_s + (1 − w) F (``student.anchor``).

    With t_a = t_end every jump to t_end has w = 0 for s ≠ t_end: its X is the bare network,
    which must then learn X(x, s, t_end) → x as s → t_end by itself (the residual in s is
    singular there). 'auto' moves t_a to t_end + (t_end − t_start), where w ∈ [1/2, 1].
    """
    if mode == "system" or param.t_anchor != system.t_end:
        return param
    return dataclasses.replace(param, t_anchor=2 * system.t_end - system.t_start)


def sampler_jumps(N: int, steps: Sequence[int]) -> dict[int, int]:
    """Inner points k of the K-step sub-grids and the farthest next point any of them jumps to."""
    horizon: dict[int, int] = {}
    for K in steps:
        g = subgrid(torch.empty(N), K)
        for a, b in zip(g[1:-1], g[2:], strict=True):
            horizon[a] = max(horizon.get(a, 0), b)
    return dict(sorted(horizon.items()))


def flowmap_indices(
    p_T: float, steps: Sequence[int], sources: str, continuous: bool = False
) -> Indices:
    """How one noise stream draws (k, i) for n samples of a flow map's batch.

    The first round(p_T n) rows have k = 0 and i ~ U{0 … N−1} (PID). The others draw
    k ~ U(inner sub-grid points) and i ~ U{k … next point} ('sampler'), or
    k ~ U{1 … N−2} and i ~ U{k … N−1} ('uniform'). With ``continuous`` the targets are
    positions on the same ranges, i ~ U[k, last] (float64; ``odedistill.grids.times_at``).
    """

    def draw(N: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n_T = round(p_T * n)
        i_T = torch.randint(0, N, (n_T,), generator=gen)
        if sources == "sampler":
            jumps = sampler_jumps(N, steps)
            pool = torch.tensor(list(jumps), dtype=torch.long)
            last = torch.tensor(list(jumps.values()), dtype=torch.long)
            pick = torch.randint(0, len(pool), (n - n_T,), generator=gen)
            k, span = pool[pick], last[pick] - pool[pick] + 1
        else:
            k = torch.randint(1, N - 1, (n - n_T,), generator=gen)
            span = N - k
        u = torch.rand(n - n_T, generator=gen, dtype=torch.float64)
        k_all = torch.cat([torch.zeros(n_T, dtype=torch.long), k])
        if continuous:
            u_T = torch.rand(n_T, generator=gen, dtype=torch.float64) * (N - 1)
            return k_all, torch.cat([u_T, k + u * (span - 1)])
        i = k + (u * span).floor().long().minimum(span - 1)
        return k_all, torch.cat([i_T, i])

    return draw


def with_seeds(draw: Indices) -> Indices:
    """``draw`` followed by one seed per sample, the last column (what marginal sources draw from)."""

    def more(N: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (*draw(N, n, gen), torch.randint(0, 2**62, (n,), generator=gen))

    return more


@torch.no_grad()
def teacher_states(system: ODESystem, grid: torch.Tensor, z: torch.Tensor, k: torch.Tensor):
    """Explicit Euler of the teacher along the grid from z at t_0 to t_k, per sample."""
    out = z.clone()
    for target in k.unique().tolist():
        rows = k == target
        out[rows] = euler(system, z[rows], grid[: target + 1]).to(z.dtype)
    return out


class FlowMapObjective(nn.Module):
    """Per-sample Lagrangian PID loss of a flow map from the sources (k, i) of a batch.

    Only the flow map is a submodule (DDP syncs its gradients); the EMA copy that may supply
    source states, the teacher, distance and grid are held outside the module tree.
    ``autocast`` opens the run's precision around the networks' forward passes.
    """

    def __init__(
        self,
        model: FlowMap,
        system: ODESystem,
        scheme: ResidualScheme,
        distance: Distance,
        grid: torch.Tensor,
        autocast: Autocast,
        source_state: str = "student",
        ema: FlowMap | None = None,
        through: bool = False,
        mix: ResidualMix | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self._parts = (system, scheme, distance, grid, autocast, source_state, ema)
        self.through = through
        self.mix = None if mix is None or mix.plain else mix

    @torch.no_grad()
    def sources(self, z: torch.Tensor, k: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """x_s for every row: z where k = 0, else the chosen source's state at t_k."""
        system, _, _, grid, _, source_state, ema = self._parts
        x_s = z.clone()
        rows = k > 0
        if not rows.any():
            return x_s
        c = None if cond is None else cond[rows]
        if source_state == "teacher":
            x_s[rows] = teacher_states(system, grid, z[rows], k[rows])
        else:
            net = self.model if source_state == "student" else ema
            assert net is not None
            t = grid[k[rows]].to(z.dtype)
            x_s[rows] = net(z[rows], t, c).to(z.dtype)
        return x_s

    def forward(self, z: torch.Tensor, k: torch.Tensor, i: torch.Tensor, *more) -> torch.Tensor:
        """Losses (B,) at (z, k, i[, frac], cond): ``frac`` places the semigroup's u."""
        frac = more[0] if len(more) == 2 else None
        cond = more[-1] if more else None
        system, scheme, distance, grid, autocast, _, _ = self._parts
        x_s = self.sources(z, k, cond)
        s = grid[k].to(z.dtype)

        def lagrangian() -> torch.Tensor:
            path = self.model.path_from(x_s, s, cond)
            losses = residual_loss(
                path,
                system,
                scheme,
                distance,
                grid,
                i,
                cond,
                autocast=autocast,
                through=self.through,
            )
            return losses.float()

        if self.mix is None:
            return lagrangian()
        parts = (system, scheme, distance, grid, autocast)
        return self.mix(self.model, parts, x_s, s, i, frac, cond, lagrangian)


class MarginalSources(FlowMapObjective):
    """The flow-map loss with exact sources: x_s ~ p_s drawn fresh (``system.sample_marginal``)
    for every row with k > 0, from a generator seeded by the batch's first seed (drawn from
    the run's noise stream, so a resumed run draws the same states)."""

    def forward(self, z: torch.Tensor, k: torch.Tensor, i: torch.Tensor, *more) -> torch.Tensor:
        """Losses (B,) at (z, k, i[, frac], seed, cond)."""
        *rest, seed, cond = more
        self._generator = torch.Generator().manual_seed(int(seed[0]))
        return super().forward(z, k, i, *rest, cond)

    @torch.no_grad()
    def sources(self, z: torch.Tensor, k: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """z where k = 0, else x(t_k) ~ p_{t_k} exactly."""
        system, grid = self._parts[0], self._parts[3]
        x_s = z.clone()
        rows = k > 0
        if rows.any():
            s = grid[k[rows]].double().cpu()
            x_s[rows] = system.sample_marginal(s, self._generator, z.dtype).to(z.device)
        return x_s


def flow_map_skip(mode: str, system: ODESystem, cfg: Any) -> SkipScaling | None:
    """The skip term of a flow map (``student.skip``): the teacher's own c_skip, c_out
    ('auto'), EDM's with the recipe's system.sigma_data ('edm'), or None for the plain map."""
    if mode == "none":
        return None
    skip = system.flow_map_skip()
    sigma_data = getattr(cfg.system.options, "sigma_data", None)
    if mode == "edm":
        if skip is None or sigma_data is None:
            raise UserError(
                f"student.skip = 'edm' needs a system with a skip scaling and system.sigma_data "
                f"(system.kind = 'probability_flow'), not {type(system).__name__}: use 'auto' "
                "or 'none'"
            )
        skip = SkipScaling.edm(sigma_data)
    return skip


def stored_skip(spec: dict[str, Any]) -> SkipScaling | None:
    """A flow map's stored skip scaling; an older file's ``skip_sigma_data`` is EDM's."""
    if spec.get("skip") is not None:
        return SkipScaling.from_dict(spec["skip"])
    sigma_data = spec.get("skip_sigma_data")
    return None if sigma_data is None else SkipScaling.edm(float(sigma_data))


class FlowMapStudent(StudentKind):
    """X(x_s, s, t) from any time s to a later t, sampled in 1 or more steps (student.steps, student.p_T, ...)."""

    config = FlowMapConfig
    capabilities = frozenset({"multi_step", "two_times"})
    fresh_branches = ("emb_s.",)  # the MLP's and SmallUNet's second-time embedding

    def check(self, options: FlowMapConfig, cfg: Any, source: str) -> None:
        check_residuals(options, source)
        if options.sources == "sampler" and not options.steps:
            raise UserError(
                f"{source}: 'student.steps' is empty; student.sources = 'sampler' draws from "
                "the steps' sub-grids: give at least one K (e.g. [2, 4]) or use sources = "
                "'uniform'"
            )
        N = cfg.scheme.N
        if any(k > N - 1 for k in options.steps):
            raise UserError(
                f"{source}: 'student.steps' {options.steps} needs K <= scheme.N - 1 = {N - 1}"
            )

    def net_kwargs(self, options: FlowMapConfig) -> dict[str, Any]:
        return {"two_times": True}

    def build(
        self,
        net: nn.Module,
        system: ODESystem,
        param: Parametrisation,
        options: FlowMapConfig,
        cfg: Any,
    ) -> FlowMap:
        if options.output == "average_velocity":
            model = AverageVelocityFlowMap(net, system.t_start, system.t_end, param)
        else:
            skip = flow_map_skip(options.skip, system, cfg)
            param = flow_anchor(param, system, options.anchor)
            model = FlowMap(net, system.t_start, system.t_end, param, skip)
        return attach_weight(model, options)

    def spec(self, model: FlowMap) -> dict[str, Any]:
        skip = model.skip_scaling
        out = {"skip": None if skip is None else skip.to_dict()}
        if getattr(model, "output", "map") != "map":
            out["output"] = model.output
        if hasattr(model, "loss_weight"):
            out["adaptive_weight"] = True
        return out

    def rebuild(self, net: nn.Module, spec: dict[str, Any], param: Parametrisation) -> FlowMap:
        if spec.get("output") == "average_velocity":
            model = AverageVelocityFlowMap(net, spec["t_start"], spec["t_end"], param)
        else:
            model = FlowMap(net, spec["t_start"], spec["t_end"], param, stored_skip(spec))
        return attach_weight(model, stored=bool(spec.get("adaptive_weight")))

    def objective(self, parts: ObjectiveParts, options: FlowMapConfig) -> nn.Module:
        if options.source_state == "ema" and parts.ema is None:
            raise UserError("student.source_state = 'ema' needs an EMA: set train.ema_rates")
        if options.source_state == "marginal" and not parts.system.has_exact_marginals:
            raise UserError(
                "student.source_state = 'marginal' needs a system with exact marginals (an "
                f"exact teacher's: teacher.kind = 'gaussian_mixture'); "
                f"{type(parts.system).__name__} here has none: use 'student', 'ema' or 'teacher'"
            )
        cls = MarginalSources if options.source_state == "marginal" else FlowMapObjective
        return cls(
            parts.model,
            parts.system,
            parts.scheme,
            parts.distance,
            parts.grid,
            parts.autocast,
            source_state=options.source_state,
            ema=parts.ema,
            through=parts.through,
            mix=ResidualMix(options, through=parts.through),
        )

    def indices(self, options: FlowMapConfig, continuous: bool) -> Indices:
        draw = flowmap_indices(options.p_T, options.steps, options.sources, continuous)
        draw = with_midpoints(draw) if ResidualMix(options).midpoints else draw
        return with_seeds(draw) if options.source_state == "marginal" else draw

    def warm_start(self, model: nn.Module, source: nn.Module) -> None:
        """As ``StudentKind.warm_start``; the two maps must share their anchor t_a (else the
        warm start is not the source student at s = t_start)."""
        a, b = model.param.t_anchor, getattr(source, "param", model.param).t_anchor
        if a != b:
            raise UserError(
                f"init: the student's anchor t_a = {b:g} differs from this flow map's "
                f"{a:g}; build the flow map with student.anchor = 'system'"
            )
        super().warm_start(model, source)

    def eval_steps(self, options: FlowMapConfig) -> list[int]:
        return [1, *options.steps]
