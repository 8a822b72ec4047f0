"""General ODEs (issue 13): continuous conditions, causal weights, validation and early stopping,
time budgets, the normalised student, and a user's own system named in a recipe."""

from __future__ import annotations

import json
import math
import pathlib
import sys
import textwrap

import pytest
import torch

import odedistill
from odedistill.infra.build import learning_rate
from odedistill.infra.recipes import from_dict, load_config, to_toml, tomllib
from odedistill.loss import CausalWeights
from odedistill.models.parametrisation import Parametrisation, UnitTime
from odedistill.systems.scale import input_statistics, residual_scale
from tests.test_hostile import cli, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


class DecayFamily(odedistill.ODESystem):
    """dx/dt = -a x with the rate a ~ U[a_lo, a_hi] as a (B, 1) condition: x(t) = z e^{-a t}."""

    def __init__(self, T=1.0, a_lo=0.5, a_hi=2.0):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (1,)
        self.a_lo, self.a_hi = a_lo, a_hi
        self.label_dim = 1

    def f(self, x, t, cond=None):
        return -cond[:, :1].to(x.dtype) * x

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return 1.0 + torch.rand((n, 1), generator=generator, dtype=dtype)

    def sample_condition(self, n, generator=None):
        u = torch.rand((n, 1), generator=generator)
        return self.a_lo + (self.a_hi - self.a_lo) * u

    def exact_solution(self, z, t, cond=None):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
        return z * torch.exp(-cond.double()[:, :1] * (t - self.t_start))


def _family_batch(n=64, seed=0):
    system = DecayFamily()
    g = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, g, dtype=torch.float64)
    c = system.sample_condition(n, g).double()
    t = torch.full((n,), system.t_end, dtype=torch.float64)
    return system, z, c, system.exact_solution(z, t, c)


# ------------------------------------------------------------------- continuous conditions
def test_reference_solvers_use_a_continuous_condition():
    system, z, c, exact = _family_batch()
    assert torch.allclose(odedistill.solve_reference(system, z, c), exact, rtol=1e-8)
    grid = odedistill.uniform_grid(201, system.t_start, system.t_end).double()
    # Euler is first order, Heun second: both converge to the exact solution of each member
    e1 = (odedistill.euler(system, z, grid, c) - exact).abs().max()
    e2 = (odedistill.heun(system, z, grid, c) - exact).abs().max()
    assert e1 < 5e-3 and e2 < 1e-5
    # and they do use c: the same z with another rate gives another endpoint
    other = odedistill.euler(system, z, grid, c.flip(0))
    assert (other - exact).abs().max() > 0.05


def test_mlp_takes_a_continuous_condition_with_its_own_scale():
    system = DecayFamily()
    stats = input_statistics(system)
    assert stats.c_mean == pytest.approx([1.25], abs=0.03)
    assert stats.c_std == pytest.approx([1.5 / math.sqrt(12)], rel=0.05)
    torch.manual_seed(0)
    net = odedistill.MLP((1,), 16, 1, label_dim=1, c_mean=stats.c_mean, c_std=stats.c_std)
    x, t = torch.ones(4, 1), torch.zeros(4)
    c = torch.tensor([[0.5], [1.0], [1.5], [2.0]])
    out = net(x, t, c)
    assert len(set(out.flatten().tolist())) == 4  # each rate its own output
    # standardisation is (c - mean) / std before the label layer
    raw = odedistill.MLP((1,), 16, 1, label_dim=1)
    raw.load_state_dict({k: v for k, v in net.state_dict().items() if "norm" not in k})
    c_std = (c - stats.c_mean[0]) / stats.c_std[0]
    assert torch.allclose(raw(x, t, c_std), out, atol=1e-6)


def test_distill_uses_the_condition():
    """The student of the family learns the dependence on a: with the true rates it beats
    the best rate-blind answer by far (distill() once dropped conditions)."""
    system, z, c, exact = _family_batch(256, seed=5)
    student = odedistill.distill(system, N=16, iterations=600, progress=False, seed=1)
    err = (student.sample(z.float(), c.float()).double() - exact).abs().mean()
    # the rate-blind floor: z times the mean of e^{-a} over a ~ U[0.5, 2]
    blind = z * (math.exp(-0.5) - math.exp(-2.0)) / 1.5
    err_blind = (blind - exact).abs().mean()
    assert err < 0.25 * err_blind, (float(err), float(err_blind))


# ------------------------------------------------------------------------ causal weights
def test_causal_weights_follow_the_formula():
    cw = CausalWeights(N=4, eps=8.0, f2=2.0, beta=0.5)
    assert torch.allclose(cw.weights(), torch.exp(-8.0 / 4 * torch.tensor([0.0, 1, 2, 3]).double()))
    idx = torch.tensor([0, 0, 2])
    losses = torch.tensor([2.0, 6.0, 1.0])
    out = cw(idx, losses)
    # first visits set R to the batch mean over f2: R = [2, 1, 0.5, 1]
    assert torch.allclose(cw.running, torch.tensor([2.0, 1.0, 0.5, 1.0]).double())
    w = torch.exp(-2.0 * torch.tensor([0.0, 2.0, 3.0, 3.5]).double())
    assert torch.allclose(out, (w[idx] * losses.double()).float())
    cw.update(torch.tensor([0]), torch.tensor([0.0]))  # EMA after the first visit
    assert cw.running[0] == pytest.approx(0.5 * 2.0)
    assert not out.requires_grad
    # eps = 0 leaves the loss alone
    assert torch.equal(CausalWeights(4, 0.0, 1.0)(idx, losses), losses)


def test_residual_scale_is_mean_square_velocity():
    system = odedistill.LinearODE(A=[[-2.0]], z_scale=3.0)
    # f = -2 z with z ~ N(0, 9): mean f^2 = 36
    assert residual_scale(system) == pytest.approx(36.0, rel=0.06)


# ----------------------------------------------------------------- schedule, time budget
def test_schedule_decays_over_the_time_budget():
    cfg = from_dict(
        {
            "optim": {"lr": 1.0, "schedule": "cosine", "warmup": 10},
            "train": {"iterations": 10**6, "max_seconds": 100.0},
        }
    )
    assert learning_rate(cfg, 4, 0.0) == pytest.approx(0.5)  # warm-up in steps
    assert learning_rate(cfg, 20, 50.0) == pytest.approx(0.5)  # half the budget: cos(pi/2)
    assert learning_rate(cfg, 20, 100.0) == pytest.approx(0.0, abs=1e-12)
    # without a budget the schedule is the step-based one
    plain = from_dict({"optim": {"lr": 1.0, "schedule": "cosine"}, "train": {"iterations": 100}})
    assert learning_rate(plain, 50, 1e9) == pytest.approx(0.5)


def test_stop_at_ratio_needs_validation():
    with pytest.raises(odedistill.UserError, match="validate_every"):
        from_dict({"train": {"stop_at_ratio": 1.5}})


# ----------------------------------------------------- validation, early stop, budgets
def test_validation_is_logged_and_stops_after_two_checks(tmp_path):
    system = odedistill.LinearODE()
    odedistill.distill(
        system,
        N=16,
        iterations=400,
        validate_every=20,
        stop_at_ratio=1e9,  # any check passes: the run stops at the second
        progress=False,
        run_dir=tmp_path,
    )
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in lines if "val_ratio" in r]
    assert [r["step"] for r in val] == [20, 40]
    for r in val:
        assert r["val_ratio"] == pytest.approx(r["val_error"] / r["val_euler_error"])
        assert 0 < r["val_euler_error"] < 0.2
    assert lines[-1]["step"] == 40 and "stopped" in lines[-1]
    assert (tmp_path / "checkpoints").is_dir()


def test_time_budget_stops_the_run(tmp_path):
    student = odedistill.distill(
        odedistill.LinearODE(),
        N=16,
        iterations=10**6,
        max_seconds=1.0,
        clock="process",
        validate_every=0,
        progress=False,
        run_dir=tmp_path,
    )
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert "max_seconds" in last["stopped"] and 10 < last["step"] < 10**5
    assert torch.isfinite(student.sample(torch.randn(4, 2))).all()


# ------------------------------------------------------------- the normalised student
def test_unit_time_map_is_stored_and_rebuilt():
    p = Parametrisation(
        1.0, odedistill.models.parametrisation.ConstantScale(1.0), UnitTime(0.0, 4.0)
    )
    assert torch.allclose(p.c_noise(torch.tensor([0.0, 2.0, 4.0])), torch.tensor([0.0, 0.5, 1.0]))
    assert Parametrisation.from_dict(json.loads(json.dumps(p.to_dict()))) == p


# ---------------------------------------------------------------- user systems in recipes
USER_MODULE = '''
import torch
import odedistill


class Decay(odedistill.ODESystem):
    """dx/dt = -rate x on [0, T]."""

    def __init__(self, rate=1.0, T=1.0):
        self.rate, self.t_start, self.t_end, self.state_shape = rate, 0.0, T, (2,)

    def f(self, x, t, cond=None):
        return -self.rate * x

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.randn((n, 2), generator=generator, dtype=dtype)
'''

USER_RECIPE = """
[run]
name = "user"
device = "cpu"

[system]
kind = "{kind}"

[system.args]
rate = 2.0
T = 0.5

[student]
width = 32
depth = 2
normalise = true
time = "unit"

[scheme]
N = 12
grid = "uniform"

[loss]
causal_eps = 10.0

[train]
batch = 32
iterations = 30
log_every = 10
checkpoint_every = 15
validate_every = 10

[eval]
n_heldout = 32
nfe = [1, 2]
trajectories = 2
"""


@pytest.fixture
def user_recipe(tmp_path, monkeypatch):
    """A recipe beside the module ``odesuite_user_mod.py`` that defines ``Decay``."""
    module = "odesuite_user_mod"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(USER_MODULE))
    path = tmp_path / "user.toml"
    path.write_text(USER_RECIPE.format(kind=f"{module}:Decay"))
    monkeypatch.delitem(sys.modules, module, raising=False)
    yield path
    sys.modules.pop(module, None)


def test_user_system_runs_from_a_recipe(user_recipe, tmp_path, monkeypatch):
    run = tmp_path / "run"
    code, err = cli("run", user_recipe, "--out", run, "--no-progress")
    assert code == 0, err
    report = json.loads((run / "eval.json").read_text())
    assert math.isfinite(report["samplers"]["student"]["trajectory_rel_error"])
    assert report["reference"] == "closed form" or "scipy" in report["reference"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["system"]["args"] == {"rate": 2.0, "T": 0.5}
    assert cfg["system"]["path"] == str(user_recipe.parent.resolve())
    metrics = (run / "metrics.jsonl").read_text()
    assert '"val_ratio"' in metrics
    # the student file rebuilds the normalised, unit-time network without importing the
    # user's module; the system is had only by naming it again
    sys.modules.pop("odesuite_user_mod", None)
    loaded = odedistill.infra.students.read_student(run)
    assert loaded.system is None and "odesuite_user_mod" not in sys.modules
    monkeypatch.chdir(user_recipe.parent)  # the user names it from the module's folder
    again = odedistill.infra.students.read_student(run, system="odesuite_user_mod:Decay")
    assert type(again.system).__name__ == "Decay" and again.system.rate == 2.0
    assert loaded.model.param.c_noise == UnitTime(0.0, 0.5)
    assert torch.isfinite(loaded.model.sample(torch.randn(3, 2))).all()
    # resume continues the run
    code, err = cli(
        "run",
        user_recipe,
        "--out",
        run,
        "--no-progress",
        "--resume",
        "--set",
        "train.iterations=40",
    )
    assert code == 0, err


def test_user_system_recipe_round_trips_through_toml(user_recipe):
    cfg = load_config(user_recipe)
    again = from_dict(tomllib.loads(to_toml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    "kind, names",
    [
        ("no_such_module_xyz:Decay", "no_such_module_xyz"),
        ("odesuite_user_mod:Missing", "Missing"),
        ("odesuite_user_mod:torch", "ODESystem"),
    ],
)
def test_user_system_errors_are_one_line(user_recipe, tmp_path, kind, names):
    bad = tmp_path / "bad.toml"
    bad.write_text(user_recipe.read_text().replace("odesuite_user_mod:Decay", kind))
    run = tmp_path / "bad_run"
    code, err = cli("run", bad, "--out", run, "--no-progress")
    one_line_error(code, err)
    assert names in err.strip().splitlines()[-1]
    assert not run.exists()


def test_user_system_bad_args_are_one_line(user_recipe, tmp_path):
    code, err = cli(
        "run",
        user_recipe,
        "--out",
        tmp_path / "r",
        "--no-progress",
        "--set",
        "system.args={speed=1}",
    )
    one_line_error(code, err)
    assert "speed" in err


def test_mlp_output_scale_maps_back_to_the_states_scale():
    torch.manual_seed(0)
    scaled = odedistill.MLP((2,), 16, 1, out_mean=[25.0, -1.0], out_std=[6.0, 0.5])
    plain = odedistill.MLP((2,), 16, 1)
    plain.load_state_dict({k: v for k, v in scaled.state_dict().items() if "out_scale" not in k})
    x, t = torch.randn(5, 2), torch.rand(5)
    expected = torch.tensor([25.0, -1.0]) + torch.tensor([6.0, 0.5]) * plain(x, t)
    assert torch.allclose(scaled(x, t), expected, atol=1e-5)


def test_custom_ode_recipe_example_is_valid():
    """The recipe of docs/custom_ode.md section 7 validates (its module is not imported here)."""
    text = (pathlib.Path(__file__).parents[1] / "docs" / "custom_ode.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = from_dict(tomllib.loads(block))
    assert cfg.system.kind == "pendulum_family:PendulumFamily"
    assert cfg.system.options.args == {"T": 1.5, "gamma": [0.1, 0.5]}
    assert cfg.loss.causal_eps == 30.0 and cfg.student.normalise
