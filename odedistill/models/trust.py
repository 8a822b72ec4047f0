"""A-posteriori error of a student: the residual r(t) = ∂_t x − f(x, t) along its own path, propagated by e' = J e + r.

The student's path x(t) solves x' = f(x, t) + r(t) exactly, with x(t_start) = z. The true
solution x* solves the same ODE without r, so the error e = x − x* obeys

    e' = f(x, t) − f(x*, t) + r ≈ J(x(t), t) e + r,        e(t_start) = 0,

with J = ∂f/∂x along the student's own path. Two per-sample indicators of |e(t_end)|:

- 'linear': integrate that linear ODE along the path (implicit trapezoid on ``points`` uniform
  steps, A-stable, J from d forward-mode derivatives of f): a first-order estimate of the error
  vector itself, which knows whether the dynamics damp or amplify the residual;
- 'integral': ∫ |r(t)| dt (trapezoid), Grönwall's bound |e(T)| ≤ ∫ e^{L(T−t)} |r(t)| dt with
  L = 0: blind to growth and damping, but needs no Jacobian (any state size).

∂_t x comes from one ``torch.func.jvp`` of the path at all nodes together. A flow map sampled
in K jumps is checked piece by piece, the error carried from one jump to the next. Samples the
indicator flags can be re-solved with the reference solver (``fallback='solver'``).
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


#: the largest state size the 'linear' indicator builds d x d Jacobians for
LINEAR_MAX_DIM = 32
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

    Returns the error vector at t (B, d) for 'linear', or e0 plus ∫_s^t |r| dt in its first
    column for 'integral' (a norm, not a vector).
    """
    B, M, dev = path.inputs[0].shape[0], points, path.inputs[0].device
    nodes = s + (t - s) * torch.linspace(0, 1, M + 1, dtype=torch.float64, device=dev)
    t_all = nodes.repeat_interleave(B)
    inputs = [None if a is None else torch.cat([a] * (M + 1)) for a in path.inputs]
    tt = t_all.to(path.dtype)
    load_jvp_decompositions()
    x, v = jvp(lambda u: path.fn(u, *inputs), (tt,), (torch.ones_like(tt),))
    c64 = None if cond is None else _float64(torch.cat([cond] * (M + 1)))
    x64 = x.double()
    r = (v.double() - system.f(x64, t_all, c64)).reshape(M + 1, B, -1)
    h = (t - s) / M
    if kind == "integral":
        norms = r.norm(dim=2)
        return e0 + abs(h) * (norms[1:] + norms[:-1]).sum(0)[:, None] / 2
    J = _jacobians(system, x64.reshape(t_all.shape[0], -1), t_all, c64)
    J = J.reshape(M + 1, B, J.shape[1], J.shape[2])
    eye = torch.eye(J.shape[-1], dtype=torch.float64, device=dev)
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
    points: int = 32,
    kind: str = "auto",
) -> torch.Tensor:
    """The per-sample error indicator (B,) of ``model``'s K-jump sample over ``times``."""
    if points < 1:
        raise UserError(f"the residual check needs points >= 1, got {points}")
    d = math.prod(system.state_shape)
    if kind == "auto":
        kind = "linear" if d <= LINEAR_MAX_DIM else "integral"
    if kind not in ("linear", "integral"):
        raise UserError(f"residual kind must be 'auto', 'linear' or 'integral', not {kind!r}")
    chunk = max(1, CHUNK_ROWS // (points + 1) // (d if kind == "linear" else 1))
    out = []
    with torch.no_grad():
        for lo in range(0, z.shape[0], chunk):
            zc = z[lo : lo + chunk]
            cc = None if cond is None else cond[lo : lo + chunk]
            e = zc.new_zeros(zc.shape[0], d if kind == "linear" else 1, dtype=torch.float64)
            for path, s, t in model.pieces(zc, cc, times):
                e = piece_error(system, path, s, t, e, cc, points, kind)
            out.append(e.norm(dim=1))
    return torch.cat(out)


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
