"""Reference solvers: orders of Euler and Heun, the scipy reference, EDM's Algorithm 2."""

import math

import torch

from odedistill import LinearODE, ProbabilityFlowODE, euler, heun, ring_mixture, solve_reference
from odedistill.grids import karras_grid, uniform_grid
from odedistill.solvers import edm_sampler, heun_nfe


def slope(Ns, errs):
    x = torch.log(torch.tensor(Ns, dtype=torch.float64))
    y = torch.log(torch.tensor(errs, dtype=torch.float64))
    return -(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


def test_scipy_reference_matches_closed_form():
    system = LinearODE()
    z = system.sample_initial(20, torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = system.exact_solution(z, torch.full((20,), system.t_end))
    assert (solve_reference(system, z) - exact).abs().max() < 1e-9


def test_euler_first_and_heun_second_order():
    system = LinearODE()
    z = system.sample_initial(20, torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = system.exact_solution(z, torch.full((20,), system.t_end))
    Ns = [16, 32, 64, 128]
    e_err = [(euler(system, z, uniform_grid(n, 0, 1)) - exact).abs().max().item() for n in Ns]
    h_err = [(heun(system, z, uniform_grid(n, 0, 1)) - exact).abs().max().item() for n in Ns]
    assert abs(slope(Ns, e_err) - 1) < 0.1
    assert abs(slope(Ns, h_err) - 2) < 0.1
    assert heun_nfe(5) == 8 and heun_nfe(5, last_step_euler=True) == 7


def test_edm_sampler_converges_at_second_order_on_exact_teacher():
    D = ring_mixture(8, 1.0, 0.05)
    system = ProbabilityFlowODE(D, (2,), t_max=80.0, t_min=0.002)
    latents = torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref_eps = solve_reference(system, latents * 80.0)
    # Algorithm 2 ends with one Euler step from sigma_min to 0, which is D(x; sigma_min)
    target = D(ref_eps, torch.full((100,), 0.002, dtype=torch.float64))
    Ns = [32, 64, 128, 256]
    errs = [(edm_sampler(D, latents, num_steps=n) - target).norm(dim=1).mean().item() for n in Ns]
    assert abs(slope(Ns, errs) - 2) < 0.3, errs


def test_edm_sampler_churn_is_seeded():
    D = ring_mixture()
    lat = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    a = edm_sampler(
        D,
        lat,
        num_steps=8,
        S_churn=40,
        S_min=0.05,
        S_max=50,
        S_noise=1.003,
        generator=torch.Generator().manual_seed(1),
    )
    b = edm_sampler(
        D,
        lat,
        num_steps=8,
        S_churn=40,
        S_min=0.05,
        S_max=50,
        S_noise=1.003,
        generator=torch.Generator().manual_seed(1),
    )
    c = edm_sampler(D, lat, num_steps=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_karras_grid_matches_formula_and_ends():
    g = karras_grid(250, 80.0, 0.002)
    i = 17
    expect = (80 ** (1 / 7) + i / 249 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert math.isclose(g[i].item(), expect, rel_tol=1e-14)
    assert g[0].item() == 80.0 and g[-1].item() == 0.002
    assert (g[1:] < g[:-1]).all()
