"""benchmarks.ring_target: its exact reference map against a closed form."""

import math

import torch

from benchmarks.ring_target.__main__ import exact_map
from odedistill import GaussianMixtureDenoiser, ProbabilityFlowODE


def test_exact_map_is_the_gaussian_flow():
    """One Gaussian N(μ, σ_k² I): the probability-flow ODE carries x(s) to
    x(t) = μ + (x(s) − μ) √(σ_k² + t²) / √(σ_k² + s²) (to the teacher's float64 rounding, ~1e-8)."""
    mu, sk = torch.tensor([[0.3, -0.2]], dtype=torch.float64), 0.05
    system = ProbabilityFlowODE(GaussianMixtureDenoiser(mu, sk), (2,))
    x = torch.tensor([[1.0, 0.5], [-0.4, 0.2]], dtype=torch.float64)
    s, t = 0.17, 0.002
    want = mu + (x - mu) * math.sqrt(sk**2 + t**2) / math.sqrt(sk**2 + s**2)
    assert torch.allclose(exact_map(system, x, s, t, steps=400), want, rtol=0, atol=1e-7)
