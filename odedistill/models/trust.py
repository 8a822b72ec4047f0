"""A-posteriori error of a student: the residual r(t) = ∂_t x − f(x, t) along its own path, propagated to t_end.

The student's path x(t) solves x' = f(x, t) + r(t) exactly, with x(t_start) = z. The true
solution x* = x − e solves the same ODE without r, so the error e obeys, exactly,

    e' = ∂_t x − f(x − e, t),        e(t_start) = 0        (≈ J(x(t), t) e + r to first order)

with J = ∂f/∂x. Three per-sample indicators of |e(t_end)|:

- 'defect' (the default for states of up to 32 numbers): that nonlinear equation by the
  implicit trapezoid rule (A-stable, two Newton steps per node, J at x − e), on ``points``
  and on ``points`` / 2 uniform steps, then Richardson's extrapolation (4 e_h − e_2h) / 3,
  which removes the rule's O(h²) term. A deferred correction of the student's path: its
  quadrature error is that of e, not of x, and it stays right when the path strays far from
  a trajectory between the times it was fitted at (where a linearisation does not);
- 'linear': e' = J(x) e + r, the first-order equation, one trapezoid pass (no Newton);
- 'integral': ∫ |r(t)| dt (trapezoid), Grönwall's bound |e(T)| ≤ ∫ e^{L(T−t)} |r(t)| dt with
  L = 0: blind to growth and damping, but needs no Jacobian (any state size).

∂_t x comes from one ``torch.func.jvp`` of the path at all nodes together. A flow map sampled
in K jumps is checked piece by piece, the error carried from one jump to the next. Samples the
indicator flags can be re-solved with the reference solver (``fallback='solver'``); a sample
whose indicator is not finite reads as infinitely wrong.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.func import jvp

from odedistill.errors import AccuracyWarning, UserError
from odedistill.models.attention import load_jvp_decompositions
from odedistill.systems.base import ODESystem

#: the student and its curve (``odedistill.models.base``, which imports this module: named
#: here without importing it)
TrajectoryModel = Any
Path = Any


#: the indicators, by name
KINDS = ("defect", "linear", "integral")
#: the largest state size 'auto' picks 'defect' for (it builds d x d Jacobians)
LINEAR_MAX_DIM = 32
#: nodes per jump of a fixed-node check ('linear', 'integral', or points= given)
POINTS = 64
#: path evaluations (samples x nodes) held at once
CHUNK_ROWS = 1 << 16
#: path evaluations per forward-mode call (larger blocks are slower on a CPU: cache)
PATH_ROWS = 1 << 14
#: the adaptive 'defect' check: nodes per jump it starts at and the most it refines to
START_POINTS = 32
MAX_POINTS = 512
#: a sample's estimate has converged when two successive extrapolations differ by at most
#: CHECK_RTOL of it plus CHECK_ATOL times the batch's mean |x(t_end)|
CHECK_RTOL = 0.1
CHECK_ATOL = 1e-4
#: ... and the gap before it was at least SHRINK times larger (fourth order: 16x per halving;
#: a kink or a rough path, whose gaps shrink slower, is refined on)
SHRINK = 8.0
#: samples refined together by the adaptive check (its node cache grows with them)
ADAPTIVE_CHUNK = 2048

Pieces = Iterator[tuple["Path", float, float]]


def _float64(a: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None or not a.is_floating_point() else a.double()


def _jacobians(system: ODESystem, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
    """J = ∂f/∂x at the rows of x (R, d) as (R, d, d): d forward-mode derivatives, all in one
    call of f on the rows repeated d times (column j's tangent is the j-th unit vector)."""
    R, d = x.shape
    shape = (d * R, *system.state_shape)
    tt = t.repeat(d)
    cc = None if cond is None else cond.repeat(d, *([1] * (cond.dim() - 1)))

    def f(y: torch.Tensor) -> torch.Tensor:
        return system.f(y.reshape(shape), tt, cc).reshape(d * R, d)

    tangents = torch.eye(d, dtype=x.dtype, device=x.device).repeat_interleave(R, dim=0)
    load_jvp_decompositions()
    cols = jvp(f, (x.repeat(d, 1),), (tangents,))[1]  # (d R, d), row j R + r: J[r] e_j
    return cols.reshape(d, R, d).permute(1, 2, 0)


def uniform_nodes(s: float, t: float, points: int, device=None) -> torch.Tensor:
    """``points`` + 1 equally spaced times from s to t, in float64."""
    return s + (t - s) * torch.linspace(0, 1, points + 1, dtype=torch.float64, device=device)


def path_at(path: Path, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The path and its time derivative at the times ``nodes`` (P,), in float64: x and v, each
    (P, B, d); one forward-mode derivative per block of about PATH_ROWS evaluations."""
    B = path.inputs[0].shape[0]
    per_call = max(1, PATH_ROWS // B)
    load_jvp_decompositions()
    xs, vs = [], []
    for lo in range(0, nodes.shape[0], per_call):
        block = nodes[lo : lo + per_call]
        tt = block.repeat_interleave(B).to(path.dtype)
        inputs = [None if a is None else torch.cat([a] * block.shape[0]) for a in path.inputs]
        x, v = jvp(lambda u, inputs=inputs: path.fn(u, *inputs), (tt,), (torch.ones_like(tt),))
        xs.append(x.double().reshape(block.shape[0], B, -1))
        vs.append(v.double().reshape(block.shape[0], B, -1))
    return torch.cat(xs), torch.cat(vs)


def path_nodes(path: Path, s: float, t: float, points: int):
    """The path and its time derivative at ``points`` + 1 uniform nodes from s to t, in float64:
    (nodes (M+1,), x (M+1, B, d), v (M+1, B, d))."""
    nodes = uniform_nodes(s, t, points, path.inputs[0].device)
    return nodes, *path_at(path, nodes)


def _f(system: ODESystem, y: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
    """f at the rows of y (R, d), flattened back to (R, d)."""
    R = y.shape[0]
    return system.f(y.reshape(R, *system.state_shape), t, cond).reshape(R, -1)


def _solve(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A⁻¹ b for a batch (B, d, d), (B, d); NaN in the rows whose A is singular (or not finite),
    so that their indicator reads as not finite instead of stopping the whole check."""
    x, info = torch.linalg.solve_ex(A, b[..., None])
    return torch.where((info != 0)[:, None], torch.nan, x[..., 0])


def defect_pass(system, nodes, x, v, e, cond, stride: int, newton: int = 2) -> torch.Tensor:
    """e at the last node from e at the first, by the implicit trapezoid rule on every
    ``stride``-th node of e' = v − f(x − e, t), ``newton`` Newton steps per node."""
    B, d = e.shape
    eye = torch.eye(d, dtype=torch.float64, device=e.device)
    M = (nodes.shape[0] - 1) // stride
    h = float(nodes[-1] - nodes[0]) / M

    def at(k: int) -> torch.Tensor:
        return nodes[k].expand(B)

    fy = _f(system, x[0] - e, at(0), cond)
    for k in range(M):
        i, j = k * stride, (k + 1) * stride
        base = e + (h / 2) * (v[i] - fy + v[j])
        for _ in range(newton):
            y = x[j] - e
            G = e - base + (h / 2) * _f(system, y, at(j), cond)
            A = eye - (h / 2) * _jacobians(system, y, at(j), cond)
            e = e - _solve(A, G)
        fy = _f(system, x[j] - e, at(j), cond)
    return e


def piece_error(
    system: ODESystem,
    path: Path,
    s: float,
    t: float,
    e0: torch.Tensor,
    cond: torch.Tensor | None,
    points: int,
    kind: str,
) -> torch.Tensor:
    """The error carried over one piece of path from time s (error e0 there) to t.

    Returns the error vector at t (B, d) for 'linear'; for 'defect' the pair of error vectors
    (B, 2, d) on ``points`` / 2 and on ``points`` steps (e0 the same pair at s); for
    'integral' e0 plus ∫_s^t |r| dt in its first column (a norm, not a vector).
    """
    nodes, x, v = path_nodes(path, s, t, points)
    M, B = points, x.shape[1]
    c64 = None if cond is None else _float64(cond)
    if kind == "defect":
        coarse = defect_pass(system, nodes, x, v, e0[:, 0], c64, stride=2)
        fine = defect_pass(system, nodes, x, v, e0[:, 1], c64, stride=1)
        return torch.stack([coarse, fine], dim=1)
    t_all = nodes.repeat_interleave(B)
    c_all = None if c64 is None else torch.cat([c64] * (M + 1))
    flat = x.reshape((M + 1) * B, -1)
    r = v - _f(system, flat, t_all, c_all).reshape(M + 1, B, -1)
    h = (t - s) / M
    if kind == "integral":
        norms = r.norm(dim=2)
        return e0 + abs(h) * (norms[1:] + norms[:-1]).sum(0)[:, None] / 2
    J = _jacobians(system, flat, t_all, c_all)
    J = J.reshape(M + 1, B, J.shape[1], J.shape[2])
    eye = torch.eye(J.shape[-1], dtype=torch.float64, device=x.device)
    e = e0
    for k in range(M):
        rhs = e + (h / 2) * ((J[k] @ e[..., None])[..., 0] + r[k] + r[k + 1])
        e = _solve(eye - (h / 2) * J[k + 1], rhs)
    return e


def resolve_system(model: TrajectoryModel, system: ODESystem | None) -> ODESystem:
    """The system given, else the one the student holds; a ``UserError`` naming the fix."""
    system = system if system is not None else model.system
    if system is None:
        raise UserError(
            f"this {type(model).__name__} holds no ODE system to check against (a student read "
            "from a file never imports one): pass system=YourODE(...) or call "
            "student.attach(YourODE(...)) first"
        )
    if not isinstance(system, ODESystem):
        raise UserError(f"system must be an odedistill.ODESystem, not {type(system).__name__}")
    return system


def adaptive_defect(
    model: TrajectoryModel,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    times: list[float],
    system: ODESystem,
    start: int = START_POINTS,
    most: int = MAX_POINTS,
    rtol: float = CHECK_RTOL,
    atol: float = CHECK_ATOL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'defect' indicator (B,) with nodes doubled, sample by sample, until it has converged,
    and the nodes per jump each sample took (B,).

    On M nodes per jump the trapezoid passes run on M, M / 2, M / 4 and M / 8 steps (after the
    first level only the pass on M is new: the others are the level before's); their
    Richardson extrapolations R(M/2, M), R(M/4, M/2) and R(M/8, M/4) are fourth order. Where the
    first two differ by at most ``atol`` mean |x(t_end)|, or by at most ``rtol`` |R(M/2, M)|
    with the gap before it at least SHRINK times larger (the h⁴ regime), the sample is done
    (its estimate then off by about a fifteenth of the gap). The others get M doubled, the
    path evaluated at the new midpoints only, up to ``most`` nodes, where the last estimate
    stands: an ``AccuracyWarning`` then counts the samples whose estimate had not settled.
    """
    B, d = z.shape[0], math.prod(system.state_shape)
    c64 = _float64(cond)
    result = torch.full((B,), torch.inf, dtype=torch.float64, device=z.device)
    used = torch.zeros(B, dtype=torch.long, device=z.device)
    active = torch.arange(B, device=z.device)
    cache: list[tuple[torch.Tensor, torch.Tensor]] = []
    coarse_passes: torch.Tensor | None = None  # the last level's passes on M, M/2 and M/4 steps
    M, scale = start, None
    while True:
        zc = z[active]
        cc = None if cond is None else cond[active]
        ca = None if c64 is None else c64[active]
        e = zc.new_zeros((zc.shape[0], 4, d), dtype=torch.float64)
        # column i: the pass of stride 2^(3 - i) on these M nodes, M / 2^(3 - i) steps; after
        # the first level only the finest is new, the others are the last level's on the
        # same steps (its nodes are every other one of these, its path values the same)
        columns = range(4) if coarse_passes is None else (3,)
        fresh = []
        for k, (path, s, t) in enumerate(model.pieces(zc, cc, times)):
            nodes = uniform_nodes(s, t, M, z.device)
            if cache:
                x_old, v_old = cache[k]
                x_mid, v_mid = path_at(path, nodes[1::2])
                x = x_old.new_empty((M + 1, *x_old.shape[1:]))
                v = torch.empty_like(x)
                x[0::2], x[1::2], v[0::2], v[1::2] = x_old, x_mid, v_old, v_mid
            else:
                x, v = path_at(path, nodes)
            fresh.append((x, v))
            for i in columns:
                e[:, i] = defect_pass(system, nodes, x, v, e[:, i], ca, stride=2 ** (3 - i))
        if coarse_passes is not None:
            e[:, :3] = coarse_passes
        if scale is None:
            scale = float(fresh[-1][0][-1].norm(dim=1).mean())
        fine, coarse, coarser = ((4 * e[:, i + 1] - e[:, i]) / 3 for i in (2, 1, 0))
        estimate = fine.norm(dim=1)
        gap = (fine - coarse).norm(dim=1)
        shrunk = (coarse - coarser).norm(dim=1) >= SHRINK * gap  # in the h⁴ regime: about 16x
        small = gap <= atol * scale
        done = small | ((gap <= rtol * estimate) & shrunk) | ~torch.isfinite(estimate)
        if 2 * M > most:
            unsettled = int((~done).sum())
            if unsettled:
                warnings.warn(
                    f"the check's estimate of {unsettled} of {B} samples had not settled at "
                    f"{M} nodes per jump (its two extrapolations still differ by more than "
                    f"{rtol:.0%}): their paths are rougher than that resolves and their "
                    "indicator is rough too; re-solve them (fallback='solver') or check them "
                    "with more nodes (points=2048)",
                    AccuracyWarning,
                    stacklevel=4,
                )
            done[:] = True
        result[active[done]] = estimate[done]
        used[active[done]] = M
        if bool(done.all()):
            return result, used
        keep = ~done
        active = active[keep]
        cache = [(x[:, keep], v[:, keep]) for x, v in fresh]
        coarse_passes = e[keep, 1:]
        M *= 2


def residual_indicator(
    model: TrajectoryModel,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    times: list[float],
    system: ODESystem,
    points: int | None = None,
    kind: str = "auto",
    with_nodes: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The per-sample error indicator (B,) of ``model``'s K-jump sample over ``times``;
    ``inf`` where it is not finite. ``points`` None: 'defect' adapts its nodes per sample
    (``adaptive_defect``), the others take POINTS. ``with_nodes``: also the nodes per jump
    each sample took (B,)."""
    d = math.prod(system.state_shape)
    if kind == "auto":
        kind = "defect" if d <= LINEAR_MAX_DIM else "integral"
    if kind not in KINDS:
        raise UserError(f"residual kind must be 'auto' or one of {', '.join(KINDS)}, not {kind!r}")
    if points is None and kind == "defect":
        with torch.no_grad():
            parts = [
                adaptive_defect(
                    model,
                    z[lo : lo + ADAPTIVE_CHUNK],
                    None if cond is None else cond[lo : lo + ADAPTIVE_CHUNK],
                    times,
                    system,
                )
                for lo in range(0, z.shape[0], ADAPTIVE_CHUNK)
            ]
        error = torch.cat([e for e, _ in parts])
        error = torch.where(torch.isfinite(error), error, torch.inf)
        return (error, torch.cat([n for _, n in parts])) if with_nodes else error
    points = POINTS if points is None else points
    if points < 1 or (kind == "defect" and points % 2):
        raise UserError(
            f"the residual check needs points >= 1 (an even number for 'defect', which also "
            f"steps on points / 2), got {points}"
        )
    width = {"defect": 2 * d, "linear": d, "integral": 1}[kind]
    chunk = max(1, CHUNK_ROWS // (points + 1) // width)
    out = []
    with torch.no_grad():
        for lo in range(0, z.shape[0], chunk):
            zc = z[lo : lo + chunk]
            cc = None if cond is None else cond[lo : lo + chunk]
            shape = (zc.shape[0], 2, d) if kind == "defect" else (zc.shape[0], width)
            e = zc.new_zeros(shape, dtype=torch.float64)
            for path, s, t in model.pieces(zc, cc, times):
                e = piece_error(system, path, s, t, e, cc, points, kind)
            if kind == "defect":  # Richardson: the trapezoid rule's h² term cancels
                e = (4 * e[:, 1] - e[:, 0]) / 3
            out.append(e.norm(dim=1))
    error = torch.cat(out)
    error = torch.where(torch.isfinite(error), error, torch.inf)
    return (error, torch.full_like(error, points, dtype=torch.long)) if with_nodes else error
