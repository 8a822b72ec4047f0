"""Reference solvers for an ODESystem: explicit Euler, Heun (EDM Algorithm 2) and a scipy reference."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from odedistill.errors import UserError
from odedistill.grids import karras_grid
from odedistill.systems.base import ODESystem
from odedistill.systems.probe import check_output


def _full(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


@torch.no_grad()
def euler(
    system: ODESystem,
    z: torch.Tensor,
    grid: torch.Tensor,
    cond: torch.Tensor | None = None,
    return_trajectory: bool = False,
) -> torch.Tensor:
    """Explicit Euler through the times of ``grid`` (len(grid) - 1 evaluations of f).

    Returns the endpoint, or all len(grid) states stacked on dim 0 with ``return_trajectory``.
    """
    x, traj = z, [z]
    for t_cur, t_next in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
        x = x + (t_next - t_cur) * system.f(x, _full(t_cur, x), cond)
        traj.append(x)
    return torch.stack(traj) if return_trajectory else x


@torch.no_grad()
def heun(
    system: ODESystem,
    z: torch.Tensor,
    grid: torch.Tensor,
    cond: torch.Tensor | None = None,
    last_step_euler: bool = False,
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2, deterministic) through ``grid``.

    Costs 2 (len(grid) - 1) evaluations, one fewer with ``last_step_euler`` (EDM's rule for a
    final step to sigma = 0, where f cannot be evaluated).
    """
    x = z
    steps = list(zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True))
    for k, (t_cur, t_next) in enumerate(steps):
        h = t_next - t_cur
        d = system.f(x, _full(t_cur, x), cond)
        x_euler = x + h * d
        if last_step_euler and k == len(steps) - 1:
            x = x_euler
        else:
            d2 = system.f(x_euler, _full(t_next, x), cond)
            x = x + h * 0.5 * (d + d2)
    return x


def heun_nfe(num_points: int, last_step_euler: bool = False) -> int:
    """Evaluations of ``heun`` on a grid of ``num_points`` times."""
    return 2 * (num_points - 1) - int(last_step_euler)


@torch.no_grad()
def solve_reference(
    system: ODESystem,
    z: torch.Tensor,
    cond: torch.Tensor | None = None,
    t_eval: list[float] | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    method: str = "DOP853",
    max_evaluations: int = 500_000,
) -> torch.Tensor:
    """Solve the system from z at t_start to t_end with scipy's adaptive ``method`` in float64.

    Systems with ``reference_log_time`` are integrated in s = ln t (dx/ds = t f), which keeps
    the step size even where the dynamics scale like 1/t. Returns the endpoints (B, ...) or,
    with ``t_eval``, the states at those times stacked on dim 0.

    Bounded: every value of f is checked (finite, the states' shape, floating point) and the
    solve stops after ``max_evaluations`` calls of f; either is a ``UserError`` naming f,
    never a solve that loops for ever.
    """
    from scipy.integrate import solve_ivp

    if not (math.isfinite(system.t_start) and math.isfinite(system.t_end)):
        raise UserError(
            f"{type(system).__name__}: the reference solve needs a finite interval, got "
            f"t_start = {system.t_start}, t_end = {system.t_end}"
        )
    calls = [0]

    z64 = z.detach().double().cpu()
    c64 = None if cond is None else cond.detach().double().cpu()
    shape = z64.shape
    log_time = system.reference_log_time
    if log_time and (system.t_start <= 0 or system.t_end <= 0):
        raise ValueError("log-time integration needs positive times")

    def to_s(t: float) -> float:
        return math.log(t) if log_time else t

    def rhs(s: float, y: np.ndarray) -> np.ndarray:
        t = math.exp(s) if log_time else s
        calls[0] += 1
        if calls[0] > max_evaluations:
            raise UserError(
                f"the reference solve of {type(system).__name__} took over {max_evaluations} "
                f"evaluations of f (reached t = {t:.6g} of [{system.t_start:g}, "
                f"{system.t_end:g}]); f is too stiff or blows up there: check f and the interval"
            )
        x = torch.from_numpy(y).reshape(shape)
        t_b = torch.full((shape[0],), t, dtype=torch.float64)
        dx = check_output(type(system).__name__, system.f(x, t_b, c64), x, t_b).double()
        if log_time:
            dx = dx * t
        return dx.reshape(-1).numpy()

    times = [system.t_end] if t_eval is None else list(t_eval)
    sol = solve_ivp(
        rhs,
        (to_s(system.t_start), to_s(system.t_end)),
        z64.reshape(-1).numpy(),
        method=method,
        t_eval=[to_s(t) for t in times],
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"scipy reference solve failed: {sol.message}")
    out = torch.from_numpy(sol.y.T.copy()).reshape(len(times), *shape)
    return out[0] if t_eval is None else out


@torch.no_grad()
def edm_sampler(
    denoiser,
    latents: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    num_steps: int = 18,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = float("inf"),
    S_noise: float = 1.0,
    generator: torch.Generator | None = None,
    randn_like: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Karras et al. (2022), Algorithm 2: Heun with optional churn, last step Euler to sigma = 0.

    ``latents`` are unit normal (B, ...); the first state is latents * sigma_max. The sampler
    makes 2 num_steps - 1 calls of ``denoiser(x, sigma, class_labels=...)`` and works in
    float64. With S_churn = 0 it is deterministic. Churn noise comes from ``randn_like(x)``
    when given (e.g. one generator per image, as EDM's generate.py does), else from
    ``generator``; it is drawn only at steps where churn is applied.
    """
    steps = karras_sigmas(num_steps, sigma_min, sigma_max, rho).to(latents.device)
    t_all = torch.cat([steps, torch.zeros(1, dtype=torch.float64, device=latents.device)])
    x = latents.double() * t_all[0]
    gamma_max = math.sqrt(2.0) - 1.0

    def D(x: torch.Tensor, sigma: float) -> torch.Tensor:
        s = torch.full((x.shape[0],), sigma, dtype=torch.float64, device=x.device)
        return denoiser(x, s, class_labels=class_labels).double()

    for i in range(num_steps):
        t_cur, t_next = float(t_all[i]), float(t_all[i + 1])
        gamma = min(S_churn / num_steps, gamma_max) if S_min <= t_cur <= S_max else 0.0
        t_hat = t_cur + gamma * t_cur
        if gamma > 0:
            if randn_like is not None:
                eps = randn_like(x).to(torch.float64)
            else:
                eps = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
            x = x + math.sqrt(t_hat**2 - t_cur**2) * S_noise * eps
        d = (x - D(x, t_hat)) / t_hat
        x_next = x + (t_next - t_hat) * d
        if i < num_steps - 1:
            d2 = (x_next - D(x_next, t_next)) / t_next
            x_next = x + (t_next - t_hat) * 0.5 * (d + d2)
        x = x_next
    return x


def karras_sigmas(
    num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0
) -> torch.Tensor:
    """EDM's noise levels sigma_0 = sigma_max > ... > sigma_{n-1} = sigma_min (float64)."""
    return karras_grid(num_steps, sigma_max, sigma_min, rho)


# ------------------------------------------------------------------- errors against a reference
def relative_error(x: torch.Tensor, exact: torch.Tensor) -> float:
    """mean_b |x_b − x*_b| / |x*_b| over flattened states, in float64 (eval.json's metric;
    dominated by endpoints near 0: never a headline for a general ODE)."""
    x, exact = x.double().flatten(1).cpu(), exact.double().flatten(1).cpu()
    return ((x - exact).norm(dim=1) / exact.norm(dim=1).clamp_min(1e-300)).mean().item()


def sample_errors(x: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """The per-sample errors e_b = |x_b − x*_b| / mean_j |x*_j| (B,), in float64 over flattened
    states on the CPU: what ``trajectory_errors`` summarises."""
    x, exact = x.double().flatten(1).cpu(), exact.double().flatten(1).cpu()
    return (x - exact).norm(dim=1) / exact.norm(dim=1).mean().clamp_min(1e-300)


def error_summary(e: torch.Tensor) -> dict[str, float]:
    """The mean (the norm-relative error), median and p95 of per-sample errors ``e``."""
    return {
        "error": e.mean().item(),
        "median": e.quantile(0.5).item(),
        "p95": e.quantile(0.95).item(),
    }


def trajectory_errors(x: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """A solver's error against reference endpoints x*, robust where some |x*_b| are near 0.

        error  = mean_b |x_b − x*_b| / mean_b |x*_b|      (norm-relative)
        median, p95: of the per-sample e_b = |x_b − x*_b| / mean_j |x*_j|

    in float64 over flattened states (DESIGN.md section 6).
    """
    return error_summary(sample_errors(x, exact))
