"""Hard-state replay (train.hard_states): picks in proportion to the loss, unbiased weights,
reproducible and bit-exact on resume; a flow map warm-started from PID's student is that student."""

from __future__ import annotations

import pytest
import torch

from odedistill.infra.build import build_session
from odedistill.infra.hard_states import HardStates
from odedistill.infra.recipes import load_config
from odedistill.kinds import STUDENTS
from odedistill.models.flowmap import FlowMap
from odedistill.models.nets import MLP
from odedistill.training.trainer import Trainer
from tests.test_accuracy import Decay


def _filled(weighted: bool) -> tuple[HardStates, torch.Tensor]:
    """A pool of 8 points z_j = j whose losses are 0 except at j = 2, 5 (1 and 3)."""
    hard = HardStates(0.5, pool=8, seed=3, weighted=weighted)
    z = torch.arange(8.0)[:, None]
    idx = (torch.arange(8),)
    assert hard.mix(z, idx, None)[3] is None  # an empty pool: the stream's batch as it is
    ell = torch.zeros(8)
    ell[2], ell[5] = 1.0, 3.0
    hard.observe(ell)
    return hard, ell


def test_picks_follow_the_losses_and_weights_undo_them():
    hard, _ = _filled(weighted=True)
    fresh = torch.full((8, 1), -1.0)
    z, idx, cond, w = hard.mix(fresh, (torch.full((8,), -1),), None)
    assert torch.equal(z[:4], fresh[:4]) and cond is None  # B - round(0.5 B) fresh rows first
    picked = z[4:, 0].long()
    assert set(picked.tolist()) <= {2, 5} and torch.equal(idx[0][4:], picked)
    # w_j = 1 / (P pi_j): pi = 1/4 at j = 2 and 3/4 at j = 5; a fresh row weighs 1
    expect = torch.where(picked == 2, torch.tensor(0.5), torch.tensor(1 / 6))
    assert torch.equal(w[:4], torch.ones(4)) and torch.allclose(w[4:], expect)
    # many picks: frequencies 1/4 and 3/4, and the weighted mean loss is the pool's mean
    draws = torch.multinomial(hard.score, 40_000, replacement=True, generator=hard.generator)
    assert (draws == 5).double().mean().item() == pytest.approx(0.75, abs=0.01)
    pi = hard.score / hard.score.sum()
    assert (hard.score[draws] / (8 * pi[draws])).mean().item() == pytest.approx(0.5)


def test_observe_refreshes_picked_losses_and_pushes_fresh_rows():
    hard, _ = _filled(weighted=False)
    z, idx, _, w = hard.mix(torch.full((8, 1), 9.0), (torch.full((8,), 9),), None)
    assert w is None
    hard.observe(torch.full((8,), 0.25))
    assert hard.head == 4 and hard.filled == 8
    assert torch.equal(hard.z[:4, 0], torch.full((4,), 9.0))  # the oldest four replaced
    picked = z[4:, 0].long().unique()
    assert torch.all(hard.score[picked[picked >= 4]] == 0.25)  # refreshed where still pooled


def _train(cfg, run_dir, resume=False, iterations=None):
    trainer = Trainer(build_session(cfg), run_dir)
    if resume:
        trainer.resume()
    trainer.run(iterations=iterations, show_progress=False)
    return trainer


def test_replay_is_reproducible_and_resumes_bit_exact(tiny_recipe, tmp_path):
    on = ["train.hard_states=0.5", "train.hard_pool=1", "train.checkpoint_every=1000"]
    cfg = load_config(tiny_recipe, on)
    straight = _train(cfg, tmp_path / "a", iterations=8)
    _train(cfg, tmp_path / "b", iterations=4)  # a fresh process's draws: seeded
    resumed = _train(cfg, tmp_path / "b", resume=True, iterations=8)
    off = _train(load_config(tiny_recipe, on[2:]), tmp_path / "d", iterations=8)
    a, b, d = (t.session.model.state_dict() for t in (straight, resumed, off))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], d[k]) for k in a)  # the replay changed the batches
    assert torch.equal(straight.noise.hard.score, resumed.noise.hard.score)


def test_flow_map_warm_started_from_pid_is_that_student():
    system = Decay()
    torch.manual_seed(0)
    pid = FlowMap.for_system(MLP((2,), 16, 2), system, two_times=False)
    flow = FlowMap.for_system(MLP((2,), 16, 2, two_times=True), system)
    STUDENTS.get("flowmap").warm_start(flow, pid)
    z, t = torch.randn(5, 2), torch.linspace(0, 1, 5)
    assert torch.allclose(flow(z, t), pid(z, t), rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception, match="does not fit"):
        STUDENTS.get("flowmap").warm_start(flow, FlowMap.for_system(MLP((2,), 8, 2), system))


def test_a_general_odes_flow_map_is_anchored_past_t_end_and_warm_starts_only_alike():
    """With t_a = t_end every jump to t_end would be the bare network; the kind moves t_a one
    interval past t_end ('auto'), keeps it with 'system', and leaves a diffusion map alone."""
    system = Decay()  # [0, 1]: t_a = t_end = 1 by default
    kind = STUDENTS.get("flowmap")
    param = system.default_parametrisation()
    opts = kind.config(skip="none")
    torch.manual_seed(0)
    flow = kind.build(MLP((2,), 16, 2, two_times=True), system, param, opts, None)
    assert param.t_anchor == 1.0 and flow.param.t_anchor == 2.0
    x, s = torch.randn(6, 2), torch.linspace(0.0, 0.9, 6)
    for p in flow.parameters():
        p.data += 0.1 * torch.randn_like(p)
    assert torch.equal(flow.transport(x, s, s), x)
    t_end = torch.ones(6)
    w = (t_end - 2.0) / (s - 2.0)  # the weight of x_s in a jump to t_end: in [1/2, 1]
    assert w.min() >= 0.5 and w.max() <= 1.0
    F = flow.network_output(x, s, t_end)
    torch.testing.assert_close(flow.transport(x, s, t_end), w[:, None] * x + (1 - w[:, None]) * F)
    opts.anchor = "system"
    kept = kind.build(MLP((2,), 16, 2, two_times=True), system, param, opts, None)
    assert kept.param.t_anchor == 1.0
    pid = FlowMap.for_system(MLP((2,), 16, 2), system, two_times=False)
    kind.warm_start(kept, pid)  # the same anchor: allowed (and exact, the test above)
    with pytest.raises(Exception, match="anchor"):
        kind.warm_start(flow, pid)
