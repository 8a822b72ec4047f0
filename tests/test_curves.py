"""Residuals in another variable than t, written with the existing schemes and no change to them.

The linear ODE dx/dt = A x (``LinearODE``, A = −½ I + 2 J) has the closed-form flow map
X(x, s, t) = e^{−τ/2} (cos 2τ · x + sin 2τ · J x), τ = t − s, which satisfies the Eulerian
equation ∂_s X + ∇_x X · f(x, s) = 0. Its residual in s (the partial ∂_s X on a grid of source
times) and along (f, 1) in (x, s) (a step h ↦ X(x + h f, s + h, t)) go through every
registered scheme; the finite differences converge at their declared order in that variable.
"""

from __future__ import annotations

import pytest
import torch

from odedistill import (
    Curve,
    LinearODE,
    along,
    centred_nodes,
    karras_grid,
    make_scheme,
    uniform_grid,
)

SYSTEM = LinearODE()
T = 1.0


def flow_map(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """X(x, s, t) of dx/dt = A x in closed form (elementary functions: forward-mode AD runs)."""
    tau = (t - s)[:, None]
    Jx = torch.stack([-x[:, 1], x[:, 0]], dim=1)
    return torch.exp(-0.5 * tau) * (torch.cos(2 * tau) * x + torch.sin(2 * tau) * Jx)


def perturbed(x: torch.Tensor, s: torch.Tensor, t: float) -> torch.Tensor:
    """X + (t − s)² x²: not a flow map; ∂_s + ∇_x · f of the extra term is exact by hand."""
    return flow_map(x, s, t) + ((t - s) ** 2)[:, None] * x**2


def perturbed_total(x: torch.Tensor, s: torch.Tensor, t: float) -> torch.Tensor:
    """d/dh perturbed(x + h f, s + h, t) at h = 0: −2 (t − s) x² + (t − s)² · 2 x ⊙ f(x)."""
    tau = (t - s)[:, None]
    return -2 * tau * x**2 + tau**2 * 2 * x * SYSTEM.f(x, s)


def states(n: int = 8) -> torch.Tensor:
    return SYSTEM.sample_initial(n, torch.Generator().manual_seed(0), dtype=torch.float64)


def fitted_slope(h: list[float], err: list[float]) -> float:
    """The least-squares slope of log err against log h: err ~ h^p."""
    x, y = torch.log(torch.tensor(h)), torch.log(torch.tensor(err))
    return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


def test_the_closed_form_is_the_systems_flow_map():
    x = states()
    s0 = torch.zeros(x.shape[0], dtype=torch.float64)
    t = torch.full_like(s0, 0.7)
    torch.testing.assert_close(
        flow_map(x, s0, t), SYSTEM.exact_solution(x, t), rtol=1e-12, atol=1e-12
    )


def eulerian_residual_in_s(scheme: str, grid: torch.Tensor) -> torch.Tensor:
    """max |∂_s X + ∇_x X · f| over source times s_i = grid[i], ∂_s X by ``scheme`` on the grid.

    X is linear in x, so ∇_x X · f(x) = X(f(x), s, t) exactly: only the scheme errs.
    """
    N = grid.shape[0]
    x = states(N)
    t = torch.full((N,), T, dtype=torch.float64)
    curve = Curve(lambda s, x, t: flow_map(x, s, t), (x, t))  # s ↦ X(x, s, t)
    idx = torch.arange(N)
    s, y, dX_ds = make_scheme(scheme)(curve, grid, idx)
    assert torch.equal(s, grid) and torch.equal(y, flow_map(x, s, t))
    return (dX_ds + flow_map(SYSTEM.f(x, s), s, t)).abs().max()


@pytest.mark.parametrize("grid", ["uniform", "karras"])
@pytest.mark.parametrize("scheme", ["upwind", "central"])
def test_residual_in_s_converges_at_the_declared_order(scheme, grid):
    def make(N):
        return uniform_grid(N, 0.0, 0.9) if grid == "uniform" else karras_grid(N, 0.9, 0.01)

    Ns = [20, 40, 80, 160]
    errors = [eulerian_residual_in_s(scheme, make(N)).item() for N in Ns]
    order = -fitted_slope([float(N) for N in Ns], errors)
    assert abs(order - make_scheme(scheme).order) < 0.15, (scheme, grid, order, errors)


def test_residual_in_s_by_autodiff_vanishes_for_the_exact_map():
    assert eulerian_residual_in_s("autodiff", uniform_grid(20, 0.0, 0.9)) < 1e-13


def total_derivative(scheme: str, F, x: torch.Tensor, s: torch.Tensor, delta: float):
    """(y, v): F(x, s) and d/dh F(x + h f(x, s), s + h) at h = 0 by ``scheme``, step δ."""
    curve = along(F, x, s, SYSTEM.f(x, s))
    idx = torch.ones(x.shape[0], dtype=torch.long)  # the middle node, h = 0
    h, y, v = make_scheme(scheme)(curve, centred_nodes(delta), idx)
    assert torch.equal(h, torch.zeros_like(h))
    return y, v


@pytest.mark.parametrize("scheme", ["upwind", "central", "autodiff"])
def test_eulerian_residual_along_the_field(scheme):
    x = states()
    s = torch.linspace(0.0, 0.8, x.shape[0], dtype=torch.float64)
    deltas = [0.08, 0.04, 0.02, 0.01]

    # the exact flow map: y is the map itself and the residual vanishes to the scheme's order
    exact = [total_derivative(scheme, lambda x, s: flow_map(x, s, T), x, s, d) for d in deltas]
    torch.testing.assert_close(exact[0][0], flow_map(x, s, T), rtol=0, atol=0)
    # a map that is not a flow map: the residual is the derivative computed by hand
    wrong = [total_derivative(scheme, lambda x, s: perturbed(x, s, T), x, s, d) for d in deltas]
    by_hand = perturbed_total(x, s, T)
    if scheme == "autodiff":
        assert exact[0][1].abs().max() < 1e-14
        torch.testing.assert_close(wrong[0][1], by_hand, rtol=1e-13, atol=1e-13)
        return
    order = make_scheme(scheme).order
    for results, target in ((exact, torch.zeros_like(by_hand)), (wrong, by_hand)):
        errors = [(v - target).abs().max().item() for _, v in results]
        assert abs(fitted_slope(deltas, errors) - order) < 0.15, (scheme, errors)
