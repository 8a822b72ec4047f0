"""The exact Gaussian-mixture teacher: posterior mean, and its ODE carries noise to the data."""

import math

import torch

from odedistill import (
    GaussianMixtureDenoiser,
    ProbabilityFlowODE,
    digits_mixture,
    ring_mixture,
    solve_reference,
)
from odedistill.evaluation.metrics import sliced_w1


def monte_carlo_posterior_mean(D, x, sigma, n=400_000, seed=0):
    """E[x0 | x] by self-normalised importance sampling from the prior."""
    x0 = D.sample(n, torch.Generator().manual_seed(seed), dtype=torch.float64).flatten(1)
    logw = -((x.flatten()[None, :] - x0) ** 2).sum(1) / (2 * sigma**2)
    w = torch.softmax(logw, 0)
    mean = (w[:, None] * x0).sum(0)
    ess = 1 / (w**2).sum()
    return mean, ess


def test_denoiser_equals_monte_carlo_posterior_mean():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(5, 3, generator=g, dtype=torch.float64)
    D = GaussianMixtureDenoiser(
        means,
        stds=torch.tensor([0.3, 0.5, 0.2, 0.4, 0.6]),
        weights=torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]),
    )
    for sigma in [0.3, 1.0, 3.0]:
        x = torch.randn(1, 3, generator=g, dtype=torch.float64) * (1 + sigma)
        exact = D(x, torch.tensor([sigma], dtype=torch.float64))[0]
        mc, ess = monte_carlo_posterior_mean(D, x, sigma)
        # posterior spread is below 1.5 per coordinate; 5 standard errors
        tol = 5 * 1.5 / math.sqrt(float(ess))
        assert (exact - mc).abs().max() < tol, (sigma, exact, mc, tol)


def test_denoiser_works_on_image_shapes_and_float32():
    D = digits_mixture(count=30, std=0.1)
    x = torch.randn(4, 1, 8, 8)
    out = D(x, torch.full((4,), 0.5))
    assert out.shape == x.shape and out.dtype == torch.float32
    # at tiny noise a mean is (almost) its own denoised value
    m = D.means[3].reshape(1, 1, 8, 8)
    torch.testing.assert_close(D(m, torch.tensor([1e-4]))[0], m[0], rtol=0, atol=1e-6)


def test_exact_ode_carries_noise_to_the_data():
    D = ring_mixture(8, 1.0, 0.05)
    system = ProbabilityFlowODE(D, (2,))
    g = torch.Generator().manual_seed(0)
    z = system.sample_initial(2000, g, dtype=torch.float64)
    x = solve_reference(system, z)
    data = D.sample(2000, g, dtype=torch.float64)
    data2 = D.sample(2000, g, dtype=torch.float64)
    floor = sliced_w1(data, data2)
    assert sliced_w1(x, data) < 2 * floor
    # each endpoint sits in a mode with the right spread
    dist = torch.cdist(x, D.means).min(1).values
    assert abs(dist.pow(2).mean().sqrt().item() - 0.05 * math.sqrt(2)) < 0.01
    # and the modes are equally used
    counts = torch.bincount(torch.cdist(x, D.means).argmin(1), minlength=8).double()
    assert (counts / 2000 - 1 / 8).abs().max() < 0.04


def test_reference_solver_is_accurate_to_1e8():
    system = ProbabilityFlowODE(ring_mixture(), (2,))
    z = system.sample_initial(50, torch.Generator().manual_seed(3), dtype=torch.float64)
    a = solve_reference(system, z)
    b = solve_reference(system, z, rtol=1e-12, atol=1e-12)
    assert (a - b).abs().max() < 1e-8
