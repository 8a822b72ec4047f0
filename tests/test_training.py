"""Training: exact resume (bit for bit), kill and resume, NaN stops with the last good checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from odedistill.errors import TrainingDiverged
from odedistill.infra.build import build_session
from odedistill.infra.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from odedistill.infra.recipes import load_config
from odedistill.training.trainer import Trainer
from tests.conftest import invoke


def train(cfg, run_dir, resume=False, iterations=None):
    session = build_session(cfg)
    trainer = Trainer(session, run_dir)
    if resume:
        trainer.resume()
    trainer.run(iterations=iterations, show_progress=False)
    return trainer


def params(trainer):
    state = trainer.state_dict()
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    for rate, sd in state["ema"].items():
        flat.update({f"ema{rate}.{k}": v for k, v in sd.items()})
    return flat


@pytest.mark.parametrize("scheme", ["upwind", "central", "autodiff"])
def test_resume_is_bit_exact(tiny_recipe, tmp_path, scheme):
    cfg = load_config(tiny_recipe, [f"scheme.kind={scheme}", "train.checkpoint_every=1000"])
    straight = train(cfg, tmp_path / "a", iterations=40)
    train(cfg, tmp_path / "b", iterations=20)
    resumed = train(cfg, tmp_path / "b", resume=True, iterations=40)
    assert resumed.step == straight.step == 40
    a, b = params(straight), params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = straight.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    for k in sa:
        for name in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][name]), torch.as_tensor(sb[k][name]))
    steps = [
        json.loads(ln)["step"] for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [10, 20, 30, 40]


def test_checkpoints_load_without_code_and_are_pruned(tiny_recipe, tmp_path):
    cfg = load_config(tiny_recipe, ["train.checkpoint_every=10", "train.keep_checkpoints=2"])
    train(cfg, tmp_path / "r")
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [30, 40]
    state = torch.load(latest_checkpoint(tmp_path / "r"), weights_only=True)
    assert state["step"] == 40 and set(state) >= {"model", "ema", "optimizer", "rng", "config"}
    assert not list((tmp_path / "r" / "checkpoints").glob("*.tmp"))


def test_kill_and_resume_matches_uninterrupted(tiny_recipe, tmp_path):
    overrides = [
        "--set",
        "train.iterations=120",
        "--set",
        "train.checkpoint_every=10",
        "--set",
        "eval.enabled=false",
        "--no-progress",
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "odedistill", "run", str(tiny_recipe)]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*cmd, "--out", str(killed), *overrides],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(killed)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_killed = list_checkpoints(killed)[-1][0]
    assert 0 < step_killed < 120, "the run finished before it could be killed"
    # The resume and the straight run read and write only files: this process can run both.
    r = invoke("run", tiny_recipe, "--out", killed, "--resume", *overrides)
    assert r.returncode == 0, r.stderr
    straight = tmp_path / "straight"
    r = invoke("run", tiny_recipe, "--out", straight, *overrides)
    assert r.returncode == 0, r.stderr
    a = load_checkpoint(latest_checkpoint(killed))
    b = load_checkpoint(latest_checkpoint(straight))
    assert a["step"] == b["step"] == 120
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_recipe, tmp_path):
    cfg = load_config(tiny_recipe, ["train.checkpoint_every=10"])
    session = build_session(cfg)
    trainer = Trainer(session, tmp_path / "r")
    D = session.system.denoiser
    calls = {"n": 0}
    original = D.forward

    def poisoned(x, sigma, class_labels=None):
        calls["n"] += 1
        out = original(x, sigma, class_labels)
        return out * float("nan") if calls["n"] > 25 else out

    D.forward = poisoned
    # the teacher's f fails, not the training: the message names f and keeps the checkpoint
    pattern = r"loss became nan at step 26.*ODE failed.*f returned nan.*ckpt-00000020\.pt"
    with pytest.raises(TrainingDiverged, match=pattern):
        trainer.run(show_progress=False)
    last = latest_checkpoint(tmp_path / "r")
    assert last.name == "ckpt-00000020.pt"
    state = load_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_resume_refuses_a_changed_recipe(tiny_recipe, tiny_run, tmp_path):
    r = invoke("run", tiny_recipe, "--out", tiny_run)  # a finished run of the same recipe
    assert r.returncode == 2 and "--resume" in r.stderr
    r = invoke("run", tiny_recipe, "--out", tiny_run, "--resume", "--set", "scheme.N=30")
    assert r.returncode == 2 and "scheme.N" in r.stderr
    r = invoke("run", tiny_recipe, "--out", tmp_path / "empty", "--resume")
    assert r.returncode == 2 and "nothing to resume" in r.stderr
