"""Hostile and careless use: each numbered defect of the hostile-use report, reproduced as a test.

Every bad input exits 2 with one line on stderr and writes nothing; signals stop training
cleanly; a run directory has one owner; checkpoints are verified when read.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from odedistill.infra.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args, cwd=None):
    """``odedistill ARGS`` in this process: (exit status, stderr)."""
    from odedistill.cli import main

    err = io.StringIO()
    old_cwd = os.getcwd()
    old_err = sys.stderr
    try:
        if cwd is not None:
            os.chdir(cwd)
        sys.stderr = err
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    finally:
        sys.stderr = old_err
        os.chdir(old_cwd)
    return code, err.getvalue()


def one_line_error(code: int, err: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err, err


def spawn(*args, cwd=None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "odedistill", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def metrics_steps(run: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


LONG = ["--set", "train.iterations=1000000", "--set", "eval.enabled=false", "--no-progress"]


# 1. ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_1_a_signal_stops_after_a_step_saves_and_exits_128_plus_signal(
    tiny_recipe, tmp_path, sig, code
):
    run = tmp_path / "r"
    proc = spawn("run", tiny_recipe, "--out", run, *LONG, "--set", "train.checkpoint_every=100000")
    wait_for(lambda: (run / "metrics.jsonl").exists() and metrics_steps(run))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted at step ") and "resume with --resume" in last
    step = int(last.split("at step ")[1].split()[0])
    assert list_checkpoints(run)[-1][0] == step > 0
    assert not list((run / "checkpoints").glob(".*.tmp"))
    c, err = cli("run", tiny_recipe, "--out", run, "--resume", "--set",
                 f"train.iterations={step + 5}", "--set", "eval.enabled=false",
                 "--set", "train.checkpoint_every=100000", "--no-progress")  # fmt: skip
    assert c == 0, err
    assert load_checkpoint(latest_checkpoint(run))["step"] == step + 5


# 2. and 5. -----------------------------------------------------------------------------------
def test_2_5_a_run_directory_has_one_owner_and_a_stale_lock_is_taken_over(tiny_recipe, tmp_path):
    run = tmp_path / "r"
    first = spawn("run", tiny_recipe, "--out", run, *LONG, "--set", "train.checkpoint_every=100000")
    wait_for(lambda: (run / "metrics.jsonl").exists() and metrics_steps(run))
    code, err = cli("run", tiny_recipe, "--out", run, "--set", "eval.enabled=false")
    one_line_error(code, err)
    assert f"in use by process {first.pid}" in err
    first.kill()  # kill -9: no cleanup, a stale lock and metrics with no checkpoint behind them
    first.wait()
    assert (run / ".lock").exists() and latest_checkpoint(run) is None
    assert len(metrics_steps(run)) >= 1
    code, err = cli("run", tiny_recipe, "--out", run, "--set", "eval.enabled=false",
                    "--no-progress")  # fmt: skip
    assert code == 0, err
    assert metrics_steps(run) == [10, 20, 30, 40]  # 5: no lines of the killed run remain
    assert not (run / ".lock").exists()


# 3. ------------------------------------------------------------------------------------------
def test_3_divergence_keeps_a_good_checkpoint_and_resume_may_lower_the_lr(tiny_recipe, tmp_path):
    """A step explodes the weights (a bias jumps by 1000 at step 25, as a too-large step
    would) and its checkpoint is written before the next loss shows it: that checkpoint is
    retired, the last one kept is one whose following loss was sane, its samples are sane, and
    resuming from it trains on."""
    from odedistill.errors import TrainingDiverged
    from odedistill.infra.build import build_session
    from odedistill.infra.recipes import load_config
    from odedistill.infra.rundir import write_run_config
    from odedistill.training.trainer import Hook, Trainer

    sets = ["train.checkpoint_every=1", "train.iterations=30", "eval.enabled=false",
            "train.keep_checkpoints=3"]  # fmt: skip
    run = tmp_path / "r"

    class Explode(Hook):
        def after_step(self, trainer, loss):
            if trainer.step == 25:
                with torch.no_grad():
                    list(trainer.session.model.parameters())[-1].add_(1000.0)

    cfg = load_config(tiny_recipe, sets)
    write_run_config(cfg, run)  # as `odedistill run` does
    trainer = Trainer(build_session(cfg), run, hooks=[Explode()])
    with pytest.raises(TrainingDiverged, match=r"loss exploded .* at step 26") as info:
        trainer.run(show_progress=False)
    good = latest_checkpoint(run)
    assert good.name == "ckpt-00000024.pt" and good.name in str(info.value)
    assert (run / "checkpoints" / "diverged-00000025.pt").is_file()
    code, err = cli("sample", run, "--weights", "raw", "--out", tmp_path / "s.npz")
    assert code == 0, err
    # the advice can be followed: a resumed run may change the learning rate and the clipping
    overrides = [a for s in sets for a in ("--set", s)]
    code, err = cli("run", tiny_recipe, "--out", run, "--resume", *overrides, "--set",
                    "optim.lr=1e-4", "--set", "optim.grad_clip=1.0", "--no-progress")  # fmt: skip
    assert f"resuming {run} from step 24" in " ".join(err.split())
    assert code == 0, err


# 4. ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=nan",
        "system.t_max=nan",
        "system.t_min=nan",
        "optim.lr=inf",
        "teacher.std=inf",
        "student.dropout=nan",
    ],
)
def test_4_nan_and_inf_are_refused_before_anything_is_written(tiny_recipe, tmp_path, override):
    code, err = cli("run", tiny_recipe, "--out", tmp_path / "r", "--set", override)
    one_line_error(code, err)
    assert "finite" in err
    assert not (tmp_path / "r").exists()


# 6. ------------------------------------------------------------------------------------------
def test_6_unwritable_outputs_are_one_line_errors_before_the_work(trained, tiny_recipe, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        ("run", tiny_recipe, "--out", a_file),
        ("run", tiny_recipe, "--out", a_file / "sub"),
        ("run", tiny_recipe, "--out", "/proc/odedistill-run"),
        ("sample", trained, "--out", a_file / "x.npz"),
        ("sample", trained, "--out", a_file / "pngs"),
        ("convert", tmp_path / "missing.pkl", a_file / "t.safetensors"),
        ("fid-ref", tmp_path, "--out", a_file / "ref.npz", "--detector", tmp_path / "d.pt"),
        ("fid", tmp_path, "--ref", tmp_path / "r.npz", "--detector", tmp_path / "d.pt",
         "--out", tmp_path),
    ]  # fmt: skip
    for args in cases:
        code, err = cli(*args)
        one_line_error(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "tiny.toml"]
    # the default run directory (runs/<name>) in a folder that cannot be written
    code, err = cli("run", tiny_recipe, cwd="/proc")
    one_line_error(code, err)
    assert "cannot write" in err


# 7. ------------------------------------------------------------------------------------------
@pytest.fixture
def trained(tiny_run) -> Path:
    """This test's copy of the session's trained TINY run (tests/conftest.py)."""
    return tiny_run


def test_7_damaged_files_are_one_line_errors(trained, tmp_path, tiny_recipe):
    from odedistill.evaluation.fid import save_ref

    ref = tmp_path / "ref.npz"
    save_ref(ref, np.zeros(4), np.eye(4))
    half = tmp_path / "half.npz"
    half.write_bytes(ref.read_bytes()[: len(ref.read_bytes()) // 2])
    text = tmp_path / "text.npz"
    np.savez(text, mu=np.array(["a", "b"]), sigma=np.eye(2))
    images = tmp_path / "images.npz"
    np.savez(images, images=np.zeros((4, 8, 8, 3), np.uint8))
    for bad in (half, text):
        code, err = cli("fid", images, "--ref", bad, "--detector", tmp_path / "d.pt")
        one_line_error(code, err)
    # a checkpoint that is {} and one whose tensor has the wrong shape (checksums fixed up)
    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    code, err = cli("sample", empty, "--out", tmp_path / "s.npz")
    one_line_error(code, err)
    state = load_checkpoint(latest_checkpoint(trained))
    key = next(iter(state["model"]))
    state["model"][key] = torch.zeros(3, 3)
    from odedistill.infra.checkpoint import checksums

    state["checksums"] = checksums(state)
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    code, err = cli("sample", wrong, "--weights", "raw", "--out", tmp_path / "s.npz")
    one_line_error(code, err)
    assert "do not fit" in err
    # a damaged config.json in the run directory
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "checkpoints").mkdir()
    (copy / "checkpoints" / "ckpt-00000040.pt").write_bytes(latest_checkpoint(trained).read_bytes())
    (copy / "config.json").write_text('{"run": [1, 2')
    code, err = cli("run", tiny_recipe, "--out", copy, "--resume")
    one_line_error(code, err)
    (copy / "config.json").write_text('["not", "a", "table"]')
    code, err = cli("run", tiny_recipe, "--out", copy, "--resume")
    one_line_error(code, err)
    assert not (tmp_path / "s.npz").exists()


def test_7_a_half_written_metrics_line_is_dropped_on_resume(tiny_recipe, tmp_path):
    run = tmp_path / "r"
    code, err = cli("run", tiny_recipe, "--out", run, "--set", "eval.enabled=false",
                    "--set", "train.iterations=20", "--no-progress")  # fmt: skip
    assert code == 0, err
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "loss": 0.1')  # a line cut off by a kill
    code, err = cli("run", tiny_recipe, "--out", run, "--resume", "--set", "eval.enabled=false",
                    "--no-progress")  # fmt: skip
    assert code == 0, err
    assert metrics_steps(run) == [10, 20, 30, 40]


# 8. ------------------------------------------------------------------------------------------
def test_8_stale_temporary_files_are_removed_on_resume(tiny_recipe, tmp_path):
    run = tmp_path / "r"
    code, err = cli("run", tiny_recipe, "--out", run, "--set", "eval.enabled=false",
                    "--set", "train.iterations=20", "--no-progress")  # fmt: skip
    assert code == 0, err
    stale = run / "checkpoints" / ".ckpt-00000040.pt.k3j2h1.tmp"
    stale.write_bytes(b"\0" * 4096)
    code, err = cli("run", tiny_recipe, "--out", run, "--resume", "--set", "eval.enabled=false",
                    "--no-progress")  # fmt: skip
    assert code == 0, err
    assert not stale.exists()


# 9. ------------------------------------------------------------------------------------------
def test_9_a_corrupted_checkpoint_is_refused_by_its_checksum(trained, tmp_path):
    ckpt = latest_checkpoint(trained)
    state = load_checkpoint(ckpt)
    raw = ckpt.read_bytes()
    weight = state["model"]["net.inp.weight"].contiguous().numpy().tobytes()
    at = raw.find(weight)
    assert at > 0, "the tensor's bytes are stored as they are"
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(raw[: at + 8] + b"\x7f" * 16 + raw[at + 24 :])
    code, err = cli("sample", damaged, "--weights", "raw", "--out", tmp_path / "s.npz")
    one_line_error(code, err)
    assert "damaged" in err and str(damaged) in err
    assert not (tmp_path / "s.npz").exists()


# 10. and 16. ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("--set", "scheme.N=1000000000000"),
        ("--set", "train.batch=1000000000000"),
        ("--set", "run.seed=100000000000000000000000"),
        ("--set", "teacher.count=100000"),
        ("--set", "student.channel_mult=[0]"),
    ],
)
def test_10_16_huge_values_are_bounded(tiny_recipe, tmp_path, args):
    code, err = cli("run", tiny_recipe, "--out", tmp_path / "r", *args)
    one_line_error(code, err)
    assert not (tmp_path / "r").exists()


def test_10_too_many_seeds(trained, tmp_path):
    code, err = cli("sample", trained, "--seeds", "0-99999999999", "--out", tmp_path / "s.npz")
    one_line_error(code, err)
    assert "too many seeds" in err


# 11. -----------------------------------------------------------------------------------------
def test_11_inputs_of_fid_are_checked_first(trained, tiny_recipe, tmp_path):
    from odedistill.evaluation.fid import save_ref
    from tests.test_fid import make_tiny_detector

    code, err = cli("run", tiny_recipe, "--out", tmp_path / "r", "--set", "eval.fid_every=20",
                    "--set", "eval.fid_ref=missing.npz", "--set",
                    "eval.fid_detector=missing.pt")  # fmt: skip
    one_line_error(code, err)
    assert "eval.fid_ref" in err and not (tmp_path / "r").exists()
    detector = make_tiny_detector(tmp_path / "tiny.pt")
    ref = tmp_path / "ref10.npz"
    save_ref(ref, np.zeros(10), np.eye(10))
    images = tmp_path / "images.npz"
    np.savez(images, images=np.zeros((4, 8, 8, 3), np.uint8))
    code, err = cli("fid", images, "--ref", ref, "--detector", detector)
    one_line_error(code, err)
    assert "features" in err and "10" in err


# 12. -----------------------------------------------------------------------------------------
class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_12_malformed_but_harmless_pickles_and_arguments(tmp_path, tiny_recipe):
    import _codecs

    from tests.test_fid import make_tiny_detector

    detector = make_tiny_detector(tmp_path / "tiny.pt")
    for name, payload in (
        ("codec", {"data": _Reduce(_codecs.encode, ("x", "rot13")), "labels": []}),
        ("huge", {"data": _Reduce(bytes, (2**63,)), "labels": []}),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
        code, err = cli("fid-ref", folder, "--out", tmp_path / "ref.npz", "--detector", detector)
        one_line_error(code, err)
    # a teacher file whose constructor arguments break the network (channel_mult [0, 0])
    from safetensors.torch import save_file

    from odedistill.teachers.load import FORMAT

    meta = {
        "format": FORMAT,
        "format_version": "1",
        "class_name": "EDMPrecond",
        "init_kwargs": json.dumps(dict(img_resolution=8, img_channels=3, model_type="SongUNet",
                                       model_channels=8, channel_mult=[0, 0], num_blocks=1,
                                       attn_resolutions=[])),
    }  # fmt: skip
    teacher = tmp_path / "t.safetensors"
    save_file({"x": torch.zeros(1)}, str(teacher), metadata=meta)
    code, err = cli("sample", "--teacher", teacher, "--out", tmp_path / "s.png")
    one_line_error(code, err)
    code, err = cli("fid", tmp_path, "--ref", tmp_path / "r.npz", "--detector", detector,
                    "--device", "garbage")  # fmt: skip
    one_line_error(code, err)
    assert not (tmp_path / "ref.npz").exists() and not (tmp_path / "s.png").exists()


# 13. -----------------------------------------------------------------------------------------
def test_13_a_full_disk_keeps_the_last_checkpoint_and_says_how_much_is_needed(
    tiny_recipe, tmp_path, monkeypatch
):
    """The disk fills while the second checkpoint is written (the write is made to fail as a
    full disk fails; this machine has no small filesystem to fill)."""
    run = tmp_path / "r"
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            f.write(b"\0" * 1024)
            raise OSError(errno.ENOSPC, "No space left on device", getattr(f, "name", ""))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    code, err = cli("run", tiny_recipe, "--out", run, "--set", "train.checkpoint_every=10",
                    "--set", "eval.enabled=false", "--no-progress")  # fmt: skip
    one_line_error(code, err)
    assert "disk full:" in err and "MB needed in" in err and str(run / "checkpoints") in err
    assert [s for s, _ in list_checkpoints(run)] == [10]
    assert not list((run / "checkpoints").glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    code, err = cli("run", tiny_recipe, "--out", run, "--resume", "--set",
                    "train.checkpoint_every=10", "--set", "eval.enabled=false",
                    "--no-progress")  # fmt: skip
    assert code == 0, err


# 14. -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "", "a/b", "..", "."])
def test_14_run_name_cannot_escape_runs(tiny_recipe, tmp_path, name):
    code, err = cli("run", tiny_recipe, "--set", f'run.name="{name}"', cwd=tmp_path)
    one_line_error(code, err)
    assert "run.name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


# 15. -----------------------------------------------------------------------------------------
def test_15_the_logged_loss_continues_across_a_resume(tiny_recipe, tmp_path):
    from odedistill.infra.build import build_session
    from odedistill.infra.recipes import load_config
    from odedistill.training.trainer import Hook, Trainer

    cfg = load_config(tiny_recipe, ["train.log_every=4", "train.checkpoint_every=6",
                                    "train.iterations=24"])  # fmt: skip
    Trainer(build_session(cfg), tmp_path / "straight").run(show_progress=False)

    class Crash(Hook):
        def after_step(self, trainer, loss):
            if trainer.step == 9:
                raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        Trainer(build_session(cfg), tmp_path / "resumed", hooks=[Crash()]).run(show_progress=False)
    resumed = Trainer(build_session(cfg), tmp_path / "resumed")
    assert resumed.resume() == 6
    resumed.run(show_progress=False)

    def losses(run):
        return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").open())]

    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    assert [s for s, _ in losses(tmp_path / "resumed")] == [4, 8, 12, 16, 20, 24]
