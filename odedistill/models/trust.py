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
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch.func import jvp

from odedistill.errors import UserError
from odedistill.models.attention import load_jvp_decompositions
from odedistill.solvers import solve_reference
from odedistill.systems.base import ODESystem

#: the student and its curve (``odedistill.models.base``, which imports this module: named
#: here without importing it)
TrajectoryModel = Any
Path = Any


#: the indicators, by name
KINDS = ("defect", "linear", "integral")
#: the largest state size 'auto' picks 'defect' for (it builds d x d Jacobians)
LINEAR_MAX_DIM = 32
#: nodes per jump of the default check
POINTS = 64
#: path evaluations (samples x nodes) held at once
CHUNK_ROWS = 1 << 16

Pieces = Iterator[tuple["Path", float, float]]
Fallback = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


class Checked(NamedTuple):
    """A checked sample: the states x (B, ...), the error indicator (B,) and which samples
    were re-solved (bool, B)."""

    x: torch.Tensor
    error: torch.Tensor
    resolved: torch.Tensor


def _float64(a: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None or not a.is_floating_point() else a.double()


def _jacobians(system: ODESystem, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
    """J = ∂f/∂x at the rows of x (R, d) as (R, d, d), from d forward-mode derivatives."""
    R, d = x.shape
    shape = (R, *system.state_shape)

    def f(y: torch.Tensor) -> torch.Tensor:
        return system.f(y.reshape(shape), t, cond).reshape(R, d)

    cols = []
    for j in range(d):
        e_j = torch.zeros_like(x)
        e_j[:, j] = 1
        load_jvp_decompositions()
        cols.append(jvp(f, (x,), (e_j,))[1])
    return torch.stack(cols, dim=2)


def path_nodes(path: Path, s: float, t: float, points: int):
    """The path and its time derivative at ``points`` + 1 uniform nodes from s to t, in float64:
    (nodes (M+1,), x (M+1, B, d), v (M+1, B, d))."""
    B, M, dev = path.inputs[0].shape[0], points, path.inputs[0].device
    nodes = s + (t - s) * torch.linspace(0, 1, M + 1, dtype=torch.float64, device=dev)
    t_all = nodes.repeat_interleave(B)
    inputs = [None if a is None else torch.cat([a] * (M + 1)) for a in path.inputs]
    tt = t_all.to(path.dtype)
    load_jvp_decompositions()
    x, v = jvp(lambda u: path.fn(u, *inputs), (tt,), (torch.ones_like(tt),))
    return nodes, x.double().reshape(M + 1, B, -1), v.double().reshape(M + 1, B, -1)


def _f(system: ODESystem, y: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
    """f at the rows of y (R, d), flattened back to (R, d)."""
    R = y.shape[0]
    return system.f(y.reshape(R, *system.state_shape), t, cond).reshape(R, -1)


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
            e = e - torch.linalg.solve(A, G[..., None])[..., 0]
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
        e = torch.linalg.solve(eye - (h / 2) * J[k + 1], rhs)
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


def residual_indicator(
    model: TrajectoryModel,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    times: list[float],
    system: ODESystem,
    points: int = POINTS,
    kind: str = "auto",
) -> torch.Tensor:
    """The per-sample error indicator (B,) of ``model``'s K-jump sample over ``times``;
    ``inf`` where it is not finite."""
    d = math.prod(system.state_shape)
    if kind == "auto":
        kind = "defect" if d <= LINEAR_MAX_DIM else "integral"
    if kind not in KINDS:
        raise UserError(f"residual kind must be 'auto' or one of {', '.join(KINDS)}, not {kind!r}")
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
    return torch.where(torch.isfinite(error), error, torch.inf)


def flagged(error: torch.Tensor, threshold: float | None, fraction: float | None) -> torch.Tensor:
    """Samples to re-solve: indicator above ``threshold``, or the worst ``fraction`` of them."""
    if (threshold is None) == (fraction is None):
        raise UserError("a fallback needs exactly one of threshold= (indicator) or fraction=")
    if threshold is not None:
        return error > threshold
    if not 0 <= fraction <= 1:
        raise UserError(f"fraction must be in [0, 1], got {fraction}")
    n = math.ceil(fraction * error.shape[0])
    mask = torch.zeros_like(error, dtype=torch.bool)
    mask[torch.topk(error, n).indices] = True
    return mask


def checked_sample(
    model: TrajectoryModel,
    x: torch.Tensor,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    times: list[float],
    system: ODESystem,
    fallback: str | Fallback | None,
    threshold: float | None,
    fraction: float | None,
    points: int,
) -> Checked:
    """The sample x with its indicator, flagged samples replaced by ``fallback``'s solution."""
    error = residual_indicator(model, z, cond, times, system, points)
    if fallback is None:
        return Checked(x, error, torch.zeros_like(error, dtype=torch.bool))
    if fallback == "solver":

        def fallback(z, cond):
            return solve_reference(system, z, cond)

    elif not callable(fallback):
        raise UserError(f"fallback must be 'solver' or a function (z, cond) -> x, not {fallback!r}")
    mask = flagged(error, threshold, fraction)
    x = x.clone()
    if mask.any():
        idx = mask.nonzero()[:, 0]
        x[idx] = fallback(z[idx], None if cond is None else cond[idx]).to(x)
    return Checked(x, error, mask)
