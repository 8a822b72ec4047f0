"""Solved states (``loss.solved``): the misfit to the reference solver's trajectories, its
formula, the objective it joins, its draws and resume, and where it is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odedistill.distances import PseudoHuber, SquaredL2
from odedistill.errors import UserError
from odedistill.infra.build import build_session
from odedistill.infra.recipes import load_config
from odedistill.systems.linear import LinearODE
from odedistill.systems.scale import residual_scale
from odedistill.training.solved import SolvedObjective, SolvedStates, pool_times
from odedistill.training.trainer import Trainer

GENERAL = """
[run]
name = "solved"
seed = 5
device = "cpu"

[system]
kind = "linear"

[student]
net = "mlp"
width = 16
depth = 2

[scheme]
kind = "autodiff"
N = 9
times = "continuous"

[loss]
target_grad = "through"
solved = 64

[optim]
lr = 1e-3

[train]
batch = 16
iterations = 6
ema_rates = [0.9]
log_every = 2
checkpoint_every = 3

[eval]
enabled = false
"""


class Exact(nn.Module):
    """x(z, t) = expm(A t) z (1 + eps t): the linear system's solution, perturbed by eps."""

    multi_step = False

    def __init__(self, system: LinearODE, eps: float = 0.0) -> None:
        super().__init__()
        self.system, self.eps = system, eps

    def forward(self, z, t, cond=None):
        return self.transport(z, torch.zeros_like(t), t)

    def transport(self, x, s, t, cond=None):
        Phi = torch.linalg.matrix_exp((t - s)[:, None, None] * self.system.A)
        return torch.einsum("bij,bj->bi", Phi, x) * (1 + self.eps * t)[:, None]


class ExactMap(Exact):
    multi_step = True


def _pool(M: int = 12) -> tuple[LinearODE, SolvedStates]:
    system = LinearODE()
    times = pool_times(torch.linspace(0, 1, 9, dtype=torch.float64))
    return system, SolvedStates(system, M, times, 0, torch.device("cpu"), torch.float64)


def _l2(d):
    return float((d**2).mean())


def _huber(d, c=0.01):
    return float(torch.sqrt((d**2).sum() + c * c) - c)


def _by_hand(system, pool, model, j, k, a, multi, dist=_l2):
    """f2 dist((x - x*) / sqrt(s2)) at the endpoint plus at tau_k, written out per sample."""
    out = []
    for jb, kb, ab in zip(j.tolist(), k.tolist(), a.tolist(), strict=True):
        lo, hi = (min(ab, kb), max(ab, kb)) if multi else (0, kb)
        x0 = pool.trajectories[lo, jb][None]
        s = pool.times[lo].reshape(1)
        total = 0.0
        for end in (pool.times.shape[0] - 1, hi):
            x = model.transport(x0, s, pool.times[end].reshape(1))[0]
            exact = system.exact_solution(pool.z[jb][None], pool.times[end])[0]
            total += dist((x - exact) / pool.scale)
        out.append(residual_scale(system) * total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("Model", [Exact, ExactMap])
def test_misfit_vanishes_at_the_solution_and_equals_its_formula(Model):
    system, pool = _pool()
    # the solver's trajectories are the closed form's
    exact = torch.stack([system.exact_solution(pool.z, t) for t in pool.times])
    assert torch.allclose(pool.trajectories, exact, rtol=1e-8, atol=1e-9)
    g = torch.Generator().manual_seed(1)
    j, k, a = (torch.randint(0, n, (7,), generator=g) for n in (12, 9, 9))
    assert pool.loss(Model(system), j, k, a, SquaredL2()).abs().max() < 1e-14
    model = Model(system, eps=0.05)
    got = pool.loss(model, j, k, a, SquaredL2())
    assert got.min() > 0
    torch.testing.assert_close(got, _by_hand(system, pool, model, j, k, a, Model.multi_step))
    # the run's distance on the scaled states: the norm-like pseudo-Huber
    got = pool.loss(model, j, k, a, PseudoHuber(0.01))
    want = _by_hand(system, pool, model, j, k, a, Model.multi_step, _huber)
    torch.testing.assert_close(got, want)
    assert pool.loss(Model(system), j, k, a, PseudoHuber(0.01)).abs().max() < 1e-12


class Constant(nn.Module):
    """A stand-in residual: per-sample loss 3 + z_0 (keeps the arithmetic checkable)."""

    def forward(self, z, idx, cond=None):
        return 3 + z[:, 0].double()


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_the_residual_joins_on_a_share_of_the_batch_scaled_by_its_inverse(fraction):
    system, pool = _pool()
    model = Exact(system, eps=0.1)
    obj = SolvedObjective(Constant(), model, pool, 2.0, SquaredL2(), fraction=fraction)
    z = torch.randn(8, 2, dtype=torch.float64)
    idx = torch.zeros(8)
    j, k, a = torch.arange(8), torch.arange(8) % 9, torch.zeros(8, dtype=torch.long)
    got = obj(z, idx, j, k, a, None)
    want = 2.0 * pool.loss(model, j, k, a, SquaredL2())
    n = int(fraction * 8)
    if n:
        want[:n] += (8 / n) * (3 + z[:n, 0])
    torch.testing.assert_close(got, want.float())


def _train(cfg, run_dir, iterations, resume=False):
    trainer = Trainer(build_session(cfg), run_dir)
    if resume:
        trainer.resume()
    trainer.run(iterations=iterations, show_progress=False)
    return trainer


def test_pool_is_seeded_counts_as_training_time_and_resumes_bit_exact(tmp_path):
    path = tmp_path / "general.toml"
    path.write_text(GENERAL)
    cfg = load_config(path, [])
    straight = _train(cfg, tmp_path / "a", iterations=6)
    first = _train(cfg, tmp_path / "b", iterations=3)
    pools = [t.objective._parts[1] for t in (straight, first)]
    assert torch.equal(pools[0].trajectories, pools[1].trajectories)  # the same pool
    assert first.assembly.setup_seconds == pools[1].seconds > 0
    resumed = _train(cfg, tmp_path / "b", resume=True, iterations=6)
    a, b = straight.session.model.state_dict(), resumed.session.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    plain = _train(load_config(path, ["loss.solved=0"]), tmp_path / "c", iterations=6)
    assert plain.assembly.setup_seconds == 0.0
    d = plain.session.model.state_dict()
    assert any(not torch.equal(a[key], d[key]) for key in a)  # the misfit changed training


def test_a_network_teacher_is_refused_in_one_line(tiny_recipe, tmp_path):
    cfg = load_config(tiny_recipe, ["loss.solved=8"])
    with pytest.raises(UserError, match="loss.solved = 0") as e:
        Trainer(build_session(cfg), tmp_path / "run")
    assert "\n" not in str(e.value)
