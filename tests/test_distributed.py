"""Data parallelism: 2 gloo ranks under torchrun equal one process drawing both noise streams; micro-batches equal one batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from odedistill.infra.build import build_session
from odedistill.infra.checkpoint import latest_checkpoint, load_checkpoint
from odedistill.infra.noise import NoiseStreams, noise_generator
from odedistill.infra.recipes import load_config
from odedistill.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


class EmulatedRanks(Trainer):
    """One process that draws its batch from two ranks' noise streams, concatenated: what two
    processes draw together."""

    def noise_streams(self) -> NoiseStreams:
        return NoiseStreams(self.cfg.run.seed, [0, 1], 2, self.cfg.train.batch)


pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().clone() for k, v in trainer.session.model.state_dict().items()}
    for rate, model in trainer.session.ema.models.items():
        out.update({f"ema{rate}.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    return out


def _one_process(recipe: Path, run_dir: Path, overrides: list[str]) -> Trainer:
    """One process drawing the batch as the two ranks' noise streams, concatenated."""
    cfg = load_config(recipe, ["train.checkpoint_every=1000", "eval.enabled=false", *overrides])
    trainer = EmulatedRanks(build_session(cfg), run_dir)
    trainer.run(show_progress=False)
    return trainer


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run tests/dist_worker.py on 2 CPU processes (gloo) once for the tests of this module."""
    if not torch.distributed.is_available():
        pytest.skip("this PyTorch has no torch.distributed")
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("ddp")
    recipe = out / "tiny.toml"
    recipe.write_text(TINY)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "dist_worker.py"),
        str(recipe),
        str(out),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_two_ranks_hold_identical_weights_equal_to_one_process(two_ranks, tmp_path):
    r0 = torch.load(two_ranks / "straight_rank0.pt")
    r1 = torch.load(two_ranks / "straight_rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    single = _weights(
        _one_process(two_ranks / "tiny.toml", tmp_path / "one", ["train.iterations=12"])
    )
    assert single.keys() == r0.keys()
    for k in r0:
        torch.testing.assert_close(single[k], r0[k], rtol=1e-5, atol=1e-6, msg=k)
    # the weights moved: the comparison is not between two untrained students
    start = load_config(two_ranks / "tiny.toml")
    init = build_session(start).model.state_dict()
    assert any(not torch.allclose(init[k], r0[f"model.{k}"]) for k in init)


def test_autodiff_scheme_under_ddp_equals_one_process(two_ranks, tmp_path):
    r0 = torch.load(two_ranks / "autodiff_rank0.pt")
    r1 = torch.load(two_ranks / "autodiff_rank1.pt")
    single = _weights(
        _one_process(
            two_ranks / "tiny.toml",
            tmp_path / "one",
            ["train.iterations=6", "scheme.kind=autodiff"],
        )
    )
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(single[k], r0[k], rtol=1e-5, atol=1e-6, msg=k)


def test_only_rank_zero_writes_and_resume_is_exact(two_ranks):
    straight, cli = two_ranks / "straight", two_ranks / "cli"
    lines = (straight / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [10, 12]  # one writer
    assert sorted(p.name for p in (straight / "samples").iterdir()) == [
        "step-00000006.png",
        "step-00000012.png",
    ]
    info = json.loads((cli / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["precision"] == "fp32"
    assert info["batch_per_process"] == 16 and info["accumulation_steps"] == 2
    # 6 iterations, then --resume to 12, equals 12 straight iterations bit for bit
    a = load_checkpoint(latest_checkpoint(straight))
    b = load_checkpoint(latest_checkpoint(cli))
    assert a["step"] == b["step"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for rate in a["ema"]:
        for k in a["ema"][rate]:
            assert torch.equal(a["ema"][rate][k], b["ema"][rate][k]), k
    # every rank's noise generator and RNG state is in the checkpoint
    assert len(b["rng"]["noise_streams"]) == 2 and len(b["rng"]["ranks"]) == 2
    assert b["world_size"] == 2
    assert not torch.equal(b["rng"]["noise_streams"][0], b["rng"]["noise_streams"][1])


def test_rank_streams_are_seed_plus_rank():
    def draw(seed: int, rank: int) -> torch.Tensor:
        return torch.randn(4, generator=noise_generator(seed, rank))

    assert not torch.equal(draw(3, 0), draw(3, 1))
    assert torch.equal(draw(3, 1), draw(4, 0))  # stream = seed + rank


@pytest.mark.parametrize("scheme", ["upwind", "autodiff"])
def test_micro_batches_accumulate_to_the_full_batch(tiny_recipe, tmp_path, scheme):
    losses, grads = [], []
    for micro in (0, 8, 12):  # 12: a ragged last micro-batch of 8
        cfg = load_config(tiny_recipe, [f"train.micro_batch={micro}", f"scheme.kind={scheme}"])
        trainer = Trainer(build_session(cfg), tmp_path / str(micro))
        assert trainer.micro == (micro or 32)
        losses.append(trainer.train_step())
        grads.append(torch.cat([p.grad.flatten() for p in trainer.session.model.parameters()]))
    for loss, grad in zip(losses[1:], grads[1:], strict=True):
        torch.testing.assert_close(loss, losses[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, grads[0], rtol=1e-5, atol=1e-7)


def test_one_process_emulating_streams_resumes_exactly(tiny_recipe, tmp_path):
    cfg = load_config(tiny_recipe, ["train.checkpoint_every=1000"])
    straight = EmulatedRanks(build_session(cfg), tmp_path / "a")
    straight.run(iterations=10, show_progress=False)
    first = EmulatedRanks(build_session(cfg), tmp_path / "b")
    first.run(iterations=5, show_progress=False)
    resumed = EmulatedRanks(build_session(cfg), tmp_path / "b")
    resumed.resume()
    resumed.run(iterations=10, show_progress=False)
    a, b = _weights(straight), _weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_batch_must_split_over_the_processes(tiny_recipe, tmp_path):
    from odedistill.errors import UserError

    cfg = load_config(tiny_recipe, ["train.batch=33"])
    with pytest.raises(UserError, match="does not split over 2 processes"):
        EmulatedRanks(build_session(cfg), tmp_path)
