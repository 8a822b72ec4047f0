"""Source states of a flow map: exact marginals of exact teachers (moments against the mixture's
formula, carried from s to t by the exact flow), and ``student.source_state = 'marginal'``."""

from __future__ import annotations

import pytest
import torch

import odedistill
from odedistill import (
    DampedPendulum,
    FlowMatchingODE,
    GaussianMixtureVelocity,
    ProbabilityFlowODE,
    heun,
    ring_mixture,
)
from odedistill.infra.build import build_session
from odedistill.infra.recipes import load_config
from odedistill.kinds import STUDENTS

pytestmark = pytest.mark.usefixtures("one_thread")

N_DRAWS = 4000


def mixture_moments(D, a: float, b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a·x0 + b·n, x0 ~ Σ w_k N(μ_k, s_k² I): E = a Σ w μ_k,
    Cov = a² (Σ w μ_k μ_kᵀ − m mᵀ) + Σ w (a² s_k² + b²) I."""
    w = D.log_weights.exp()
    mu = D.means
    m = w @ mu
    between = (w[:, None, None] * mu[:, :, None] * mu[:, None, :]).sum(0) - torch.outer(m, m)
    within = (w * (a**2 * D.stds**2 + b**2)).sum()
    return a * m, a**2 * between + within * torch.eye(mu.shape[1], dtype=torch.float64)


def assert_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, slack: float = 0.0):
    """The sample mean and covariance equal the formula within 5 standard errors (+ slack)."""
    n = len(x)
    xm = x.mean(0)
    assert ((xm - mean).abs() <= 5 * x.std(0) / n**0.5 + slack).all(), (xm, mean)
    d = x - xm
    products = d[:, :, None] * d[:, None, :]  # the covariance is the mean of these
    se = products.std(0) / n**0.5
    assert ((products.mean(0) - cov).abs() <= 5 * se + slack).all(), (products.mean(0), cov)


@pytest.mark.parametrize("s", [0.02, 0.7, 5.0])
def test_probability_flow_marginal_is_the_mixture_with_variances_plus_s2(s):
    D = ring_mixture()
    system = ProbabilityFlowODE(D, (2,))
    assert system.has_exact_marginals
    x = system.sample_marginal(
        torch.full((N_DRAWS,), s), torch.Generator().manual_seed(0), torch.float64
    )
    assert x.shape == (N_DRAWS, 2)
    assert_moments(x, *mixture_moments(D, 1.0, s))


@pytest.mark.parametrize("t", [0.05, 0.5, 0.95])
def test_flow_matching_marginal_is_the_interpolation(t):
    D = ring_mixture(std=0.1)
    system = FlowMatchingODE(GaussianMixtureVelocity(D), (2,))
    assert system.has_exact_marginals
    x = system.sample_marginal(
        torch.full((N_DRAWS,), t), torch.Generator().manual_seed(1), torch.float64
    )
    assert_moments(x, *mixture_moments(D, 1 - t, t))


def test_per_sample_times_and_systems_without_exact_marginals():
    system = ProbabilityFlowODE(ring_mixture(), (2,))
    s = torch.tensor([0.01, 50.0]).repeat(500)
    x = system.sample_marginal(s, torch.Generator().manual_seed(2), torch.float64)
    # the small-s rows lie on the ring, the large-s rows are spread like N(0, s²I)
    assert (x[0::2].norm(dim=1) - 1).abs().max() < 0.5
    assert 40 < x[1::2].std() < 60
    for plain in (DampedPendulum(), ProbabilityFlowODE(lambda x, t, class_labels=None: x, (2,))):
        assert not plain.has_exact_marginals
        with pytest.raises(NotImplementedError, match="no exact marginals"):
            plain.sample_marginal(torch.ones(3))


@pytest.mark.parametrize("s, t", [(2.0, 0.3), (0.3, 0.02)])
def test_the_exact_flow_carries_the_marginal_at_s_to_the_marginal_at_t(s, t):
    D = ring_mixture(std=0.1)
    system = ProbabilityFlowODE(D, (2,))
    x_s = system.sample_marginal(
        torch.full((2000,), s), torch.Generator().manual_seed(3), torch.float64
    )
    grid = torch.logspace(torch.log10(torch.tensor(s)), torch.log10(torch.tensor(t)), 120)
    x_t = heun(system, x_s, grid.double())
    # Heun's error on 120 geometric steps is far below the sampling error
    assert_moments(x_t, *mixture_moments(D, 1.0, t), slack=1e-3)


def _tiny(tmp_path, *extra):
    from tests.conftest import TINY

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    return load_config(recipe, ["student.kind=flowmap", "train.ema_rates=[]", *extra])


def test_marginal_sources_in_the_flow_maps_objective(tmp_path):
    cfg = _tiny(tmp_path, "student.source_state=marginal", "train.batch=256")
    session = build_session(cfg)
    kind, options = STUDENTS.get("flowmap"), cfg.student.options
    k, i, seed = kind.indices(options, False)(20, 256, torch.Generator().manual_seed(4))
    assert (i >= k).all() and seed.dtype == torch.long
    from odedistill.training.trainer import Trainer

    objective = Trainer(session, tmp_path / "run").objective
    z = session.system.sample_initial(256, torch.Generator().manual_seed(5))
    losses = objective(z, k, i, seed, None)
    assert losses.shape == (256,) and torch.isfinite(losses).all()
    x_s = objective.sources(z, k, None)
    rows = k > 0
    assert torch.equal(x_s[~rows], z[~rows])
    # each source row is an exact draw at its own t_k: |x|² ≈ |μ|² + 2 (s_k² + t_k²) on average
    t = session.grid[k[rows]].double()
    expected = (1 + 2 * (0.05**2 + t**2)).mean()
    assert abs(x_s[rows].double().pow(2).sum(1).mean() / expected - 1) < 0.25
    # the batch's seed fixes the draws: the same seed the same states, another seed others
    objective(z, k, i, seed, None)
    assert torch.equal(objective.sources(z, k, None), x_s)
    objective(z, k, i, seed + 1, None)
    assert not torch.equal(objective.sources(z, k, None)[rows], x_s[rows])


def test_marginal_sources_need_exact_marginals(tmp_path):
    cfg = _tiny(
        tmp_path, "student.source_state=marginal", "system.kind=pendulum", "student.skip=none"
    )
    from odedistill.training.trainer import Trainer

    with pytest.raises(odedistill.UserError, match="needs a system with exact marginals"):
        Trainer(build_session(cfg), tmp_path / "run")


def test_marginal_sources_with_the_semigroups_midpoints(tmp_path):
    from odedistill.training.trainer import Trainer

    cfg = _tiny(
        tmp_path,
        "student.source_state=marginal",
        "student.residual=semigroup",
        "student.residual_weights=[1, 0, 1]",
    )
    trainer = Trainer(build_session(cfg), tmp_path / "run")
    idx = STUDENTS.get("flowmap").indices(cfg.student.options, False)(
        20, 32, torch.Generator().manual_seed(6)
    )
    assert len(idx) == 4 and idx[2].dtype == torch.float64 and idx[3].dtype == torch.long
    z = trainer.session.system.sample_initial(32, torch.Generator().manual_seed(7))
    losses = trainer.objective(z, *idx, None)
    assert losses.shape == (32,) and torch.isfinite(losses).all()
    trainer.run(iterations=3, show_progress=False)
