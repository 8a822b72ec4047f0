"""Flow-matching teachers: the closed-form mixture velocity, the ODE's equivalence with EDM's, and
the quickstart_fm recipe."""

import json
import math

import pytest
import torch

from odedistill import (
    FlowMap,
    FlowMatchingODE,
    GaussianMixtureDenoiser,
    GaussianMixtureVelocity,
    ProbabilityFlowODE,
    karras_grid,
    make_scheme,
    pid_loss,
    ring_mixture,
    solve_reference,
)
from odedistill.api.run import run_recipe
from odedistill.distances import SquaredL2
from odedistill.errors import UserError
from odedistill.evaluation.metrics import sliced_w1
from odedistill.infra.build import build_session
from odedistill.infra.recipes import from_dict, load_config
from odedistill.infra.students import read_student
from odedistill.models.parametrisation import Parametrisation
from odedistill.systems.flow_matching import VelocityFromDenoiser, edm_to_flow, flow_to_edm
from tests.problems import GridTrajectory
from tests.test_hostile import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def mixture_3d() -> GaussianMixtureDenoiser:
    g = torch.Generator().manual_seed(1)
    return GaussianMixtureDenoiser(
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        stds=torch.tensor([0.3, 0.5, 0.2, 0.4, 0.6]),
        weights=torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]),
    )


def monte_carlo_velocity(D, x_t, t, n=400_000, seed=0):
    """E[eps - x0 | x_t] by self-normalised importance sampling of x0 from the prior.

    Given x0, eps = (x_t - (1 - t) x0)/t, so eps - x0 = (x_t - x0)/t, weighted by the
    likelihood N(x_t; (1 - t) x0, t^2 I). Returns the estimate and its standard error.
    """
    x0 = D.sample(n, torch.Generator().manual_seed(seed), dtype=torch.float64).flatten(1)
    logw = -((x_t.flatten()[None, :] - (1 - t) * x0) ** 2).sum(1) / (2 * t**2)
    w = torch.softmax(logw, 0)
    v = (x_t.flatten()[None, :] - x0) / t
    mean = (w[:, None] * v).sum(0)
    var = (w[:, None] * (v - mean) ** 2).sum(0)
    ess = 1 / (w**2).sum()
    return mean, (var / ess).sqrt()


def test_velocity_equals_monte_carlo_posterior_mean():
    D = mixture_3d()
    v = GaussianMixtureVelocity(D)
    g = torch.Generator().manual_seed(2)
    for t in [0.2, 0.5, 0.8]:
        x_t = (1 - t) * D.sample(1, g, dtype=torch.float64) + t * torch.randn(
            1, 3, generator=g, dtype=torch.float64
        )
        exact = v(x_t, torch.tensor([t], dtype=torch.float64))[0]
        mc, err = monte_carlo_velocity(D, x_t, t)
        assert ((exact - mc).abs() < 5 * err + 1e-9).all(), (t, exact, mc, err)


def test_velocity_at_the_ends_of_the_interval():
    D = mixture_3d()
    v = GaussianMixtureVelocity(D)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # t = 1: x_1 = eps carries no information about x0, so v = x - E[x0]
    data_mean = D.log_weights.exp() @ D.means
    torch.testing.assert_close(v(x, 1.0), x - data_mean, rtol=0, atol=1e-14)
    # t = 0: x_0 = x0 is independent of eps, so v = E[eps] - x = -x
    torch.testing.assert_close(v(x, 0.0), -x, rtol=0, atol=1e-14)
    # and it is continuous into both ends
    torch.testing.assert_close(v(x, 1 - 1e-9), v(x, 1.0), rtol=0, atol=1e-7)
    torch.testing.assert_close(v(x, 1e-9), v(x, 0.0), rtol=0, atol=1e-7)


def test_velocity_is_the_edm_denoiser_in_flow_coordinates():
    D = mixture_3d()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.9, 0.999], dtype=torch.float64)
    torch.testing.assert_close(
        VelocityFromDenoiser(D)(x, t), GaussianMixtureVelocity(D)(x, t), rtol=1e-9, atol=1e-10
    )
    # the residual's target is the predicted x0 = D(x_t/(1 - t); t/(1 - t))
    system = FlowMatchingODE(GaussianMixtureVelocity(D), (3,))
    x_edm, sigma = flow_to_edm(x, t)
    torch.testing.assert_close(system.target(x, t), D(x_edm, sigma), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(edm_to_flow(x_edm, sigma)[0], x, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="0 < t < 1"):
        VelocityFromDenoiser(D)(x, 1.0)
    # data comes from the denoiser's mixture
    wrapped = FlowMatchingODE(VelocityFromDenoiser(D), (3,), t_max=0.99, t_min=0.01)
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(wrapped.sample_data(4, g), D.sample(4, g.manual_seed(5)))


def test_flow_ode_and_probability_flow_ode_carry_noise_to_the_same_data():
    D = ring_mixture(8, 1.0, 0.05)
    T, eps = 80.0, 0.002
    pf = ProbabilityFlowODE(D, (2,), t_max=T, t_min=eps)
    z = pf.sample_initial(200, torch.Generator().manual_seed(0), dtype=torch.float64)
    x_pf = solve_reference(pf, z)
    # the same start in flow coordinates: t = T/(1+T), x_t = z/(1+T)
    fm = FlowMatchingODE(GaussianMixtureVelocity(D), (2,), t_max=T / (1 + T), t_min=eps / (1 + eps))
    z_fm, t_fm = edm_to_flow(z, torch.tensor(T, dtype=torch.float64))
    assert math.isclose(float(t_fm), fm.t_start, rel_tol=1e-15)
    x_fm = solve_reference(fm, z_fm)
    x_back, sigma = flow_to_edm(x_fm, torch.tensor(fm.t_end, dtype=torch.float64))
    assert math.isclose(float(sigma), eps, rel_tol=1e-12)
    assert (x_back - x_pf).abs().max() < 1e-7


def test_flow_ode_from_pure_noise_reaches_the_mixture():
    D = ring_mixture(8, 1.0, 0.05)
    system = FlowMatchingODE(GaussianMixtureVelocity(D), (2,))
    g = torch.Generator().manual_seed(1)
    n = 1000
    z = system.sample_initial(n, g, dtype=torch.float64)
    assert (system.t_start, system.t_end) == (1.0, 0.0)
    x = solve_reference(system, z, rtol=1e-8, atol=1e-8)
    data, data2 = system.sample_data(n, g).double(), D.sample(n, g, dtype=torch.float64)
    assert sliced_w1(x, data) < 2 * sliced_w1(data, data2)
    dist = torch.cdist(x, D.means).min(1).values
    assert abs(dist.pow(2).mean().sqrt().item() - 0.05 * math.sqrt(2)) < 0.01
    counts = torch.bincount(torch.cdist(x, D.means).argmin(1), minlength=8).double()
    assert (counts / n - 1 / 8).abs().max() < 0.04


def test_system_interface():
    D = ring_mixture()
    system = FlowMatchingODE(GaussianMixtureVelocity(D), (2,), t_max=0.9, t_min=0.01, label_dim=3)
    g = torch.Generator().manual_seed(0)
    z = system.sample_initial(20000, g, dtype=torch.float64)
    assert abs(z.std().item() - 0.9) < 0.01
    c = system.sample_condition(5, g)
    assert c.shape == (5, 3) and torch.equal(c.sum(1), torch.ones(5))
    x, t, v = torch.randn(4, 2), torch.rand(4), torch.randn(4, 2)
    torch.testing.assert_close(system.to_target(x, t, v), x - t[:, None] * v)
    # the boundary-exact student anchors at t = 0: x(z, t) = (t/t_max) z + (1 - t/t_max) F
    student = FlowMap.for_system(torch.nn.Identity(), system, two_times=False)
    assert student.weight(torch.tensor([0.9, 0.45, 0.0])).tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="t_min"):
        FlowMatchingODE(GaussianMixtureVelocity(D), (2,), t_max=1.5)


def test_pid_loss_vanishes_on_the_flow_teachers_euler_steps():
    """PID's Theorem 1 in flow coordinates: zero upwind residual on the teacher's Euler steps."""
    system = FlowMatchingODE(GaussianMixtureVelocity(ring_mixture(8, 1.0, 0.05)), (2,))
    grid = karras_grid(30, system.t_start, system.t_end)
    assert grid[0] == 1 and grid[-1] == 0
    z = system.sample_initial(32, torch.Generator().manual_seed(0), dtype=torch.float64)
    model = GridTrajectory.euler(system, grid, z)
    for i in range(len(grid) - 1):
        idx = torch.full((32,), i)
        loss = pid_loss(model, system, make_scheme("upwind"), SquaredL2(), grid, z, idx)
        assert loss.max() < 1e-20, (i, loss.max())
    # a trajectory off the Euler steps is penalised
    states = model.states.clone()
    states[10] += 1e-3
    idx = torch.full((32,), 10)
    off = GridTrajectory(grid, z, states)
    assert pid_loss(off, system, make_scheme("upwind"), SquaredL2(), grid, z, idx).min() > 1e-12


# ----------------------------------------------------------------------- from a recipe
def test_recipe_interval_rules():
    assert load_config("quickstart_fm").system.kind == "flow_matching"
    fm = {"system": {"kind": "flow_matching", "t_max": 1.0, "t_min": 0.0}}
    assert from_dict(fm).system.options.t_min == 0.0
    assert from_dict({"system": {"kind": "flow_matching"}}).system == from_dict(fm).system
    with pytest.raises(UserError, match="exceeds 1"):
        from_dict({"system": {"kind": "flow_matching", "t_max": 80.0}})
    with pytest.raises(UserError, match="must be > 0 for the probability-flow ODE"):
        from_dict({"system": {"t_min": 0.0}})
    with pytest.raises(UserError, match="needs a flow-matching velocity"):
        build_session(
            from_dict(
                {
                    **fm,
                    "teacher": {"kind": "edm_random", "img_resolution": 8, "model_channels": 8},
                    "run": {"device": "cpu"},
                }
            )
        )


def test_quickstart_fm_distils_evaluates_and_samples(tmp_path):
    small = [
        "train.iterations=20",
        "train.batch=32",
        "train.checkpoint_every=20",
        "student.width=32",
        "student.depth=1",
        "scheme.N=20",
        "eval.n_heldout=16",
        "eval.nfe=[1]",
        "eval.trajectories=2",
    ]
    report = run_recipe("quickstart_fm", tmp_path / "run", small, show_progress=False)
    assert report["reference"] == "scipy DOP853 rtol=atol=1e-10"
    assert json.loads((tmp_path / "run" / "eval.json").read_text()) == json.loads(
        json.dumps(report)
    )
    assert (tmp_path / "run" / "samples.png").stat().st_size > 1000
    # the grid goes down to t = 0 and the teacher's Euler there lands near the exact endpoints
    assert report["samplers"]["teacher_euler_19"]["trajectory_rel_error"] < 0.05
    loaded = read_student(tmp_path / "run", weights="raw")
    system = loaded.system
    assert isinstance(system, FlowMatchingODE) and system.velocity is None
    assert (system.t_start, system.t_end) == (1.0, 0.0)
    assert loaded.model.param == Parametrisation.plain(0.0)
    z = system.sample_initial(5, torch.Generator().manual_seed(0))
    assert torch.equal(loaded.model(z, torch.ones(5)), z)  # x(z, 1) = z exactly
    code, err = cli("sample", tmp_path / "run", "--n", "4", "--out", tmp_path / "s.npz", "--quiet")
    assert code == 0, err
