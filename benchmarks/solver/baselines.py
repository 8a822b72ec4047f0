"""The solvers a student replaces, each at the loosest setting that reaches a given error: torch RK4, scipy DOP853 and LSODA.

Errors are norm-relative at t_end, mean_i |x_i − x*_i| / mean_i |x*_i| (DESIGN.md §6); times are
process CPU seconds (one thread), the least of ``repeats`` runs, with the wall time beside them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from odedistill import ODESystem


def norm_relative(x: torch.Tensor, exact: torch.Tensor) -> float:
    """mean_i |x_i − x*_i| / mean_i |x*_i|."""
    x, exact = x.double().reshape(x.shape[0], -1), exact.double().reshape(exact.shape[0], -1)
    return float((x - exact).norm(dim=1).mean() / exact.norm(dim=1).mean())


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """(result, least CPU seconds, wall seconds of that run) over ``repeats`` calls."""
    best = (None, math.inf, math.inf)
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if cpu < best[1]:
            best = (out, cpu, wall)
    return best


# ------------------------------------------------------------------------------ torch RK4
@torch.no_grad()
def rk4(system: ODESystem, z: torch.Tensor, cond: torch.Tensor | None, steps: int) -> torch.Tensor:
    """Classical fourth-order Runge–Kutta, ``steps`` equal steps, the whole batch at once."""
    h = (system.t_end - system.t_start) / steps
    x = z
    B = z.shape[0]
    for k in range(steps):
        t = torch.full((B,), system.t_start + k * h, dtype=z.dtype)
        k1 = system.f(x, t, cond)
        k2 = system.f(x + (h / 2) * k1, t + h / 2, cond)
        k3 = system.f(x + (h / 2) * k2, t + h / 2, cond)
        k4 = system.f(x + h * k3, t + h, cond)
        x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def fewest_rk4_steps(
    system: ODESystem, z, cond, exact, target: float, max_steps: int = 4096
) -> int | None:
    """The fewest RK4 steps whose error is at most ``target`` (doubling, then bisection)."""

    def ok(n: int) -> bool:
        err = norm_relative(rk4(system, z, cond, n), exact)
        return math.isfinite(err) and err <= target

    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > max_steps:
            return None
    lo = hi // 2  # fails (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


# ---------------------------------------------------------------------------------- scipy
#: tolerances tried, loosest first; atol = rtol x the mean |z| of the states
RTOLS = [10.0 ** (-k / 2) for k in range(2, 21)]


def scipy_solve(
    system: ODESystem, z: torch.Tensor, cond, method: str, rtol: float, vectorised: bool
) -> torch.Tensor:
    """scipy ``solve_ivp`` from t_start to t_end in float64: the batch as one big system
    (``vectorised``; LSODA told its Jacobian is block-diagonal, bands of width d − 1) or one
    solve per state."""
    from scipy.integrate import solve_ivp

    z64 = z.double().reshape(z.shape[0], -1)
    c64 = None if cond is None else cond.double()
    d = z64.shape[1]
    atol = rtol * float(z64.norm(dim=1).mean())

    def solve(y0: torch.Tensor, c) -> np.ndarray:
        shape = (y0.shape[0], *system.state_shape)

        def rhs(t: float, y: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(y).reshape(shape)
            tt = torch.full((shape[0],), t, dtype=torch.float64)
            return system.f(x, tt, c).reshape(-1).numpy()

        extra = {"lband": d - 1, "uband": d - 1} if method == "LSODA" else {}
        sol = solve_ivp(
            rhs,
            (system.t_start, system.t_end),
            y0.reshape(-1).numpy(),
            method=method,
            t_eval=[system.t_end],
            rtol=rtol,
            atol=atol,
            **extra,
        )
        if not sol.success:
            raise RuntimeError(sol.message)
        return sol.y[:, -1]

    if vectorised:
        out = solve(z64, c64)
    else:
        out = np.stack(
            [
                solve(z64[i : i + 1], None if c64 is None else c64[i : i + 1])
                for i in range(len(z64))
            ]
        )
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(z.shape)


def loosest_rtol(
    system: ODESystem, z, cond, exact, target: float, method: str, vectorised: bool
) -> float | None:
    """The loosest tolerance in ``RTOLS`` whose error is at most ``target``."""
    for rtol in RTOLS:
        try:
            x = scipy_solve(system, z, cond, method, rtol, vectorised)
        except RuntimeError:
            continue
        if norm_relative(x, exact) <= target:
            return rtol
    return None
