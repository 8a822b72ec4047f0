"""Hostile files and places: a checkpoint never imports what it names, its checksum covers all of
it, a refused run never touches another run's folder, a full disk is one line, files follow
the umask."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import odedistill
from odedistill._io import atomic_write, atomic_write_text
from odedistill.errors import UserError
from odedistill.infra.checkpoint import checksums, latest_checkpoint, load_checkpoint
from odedistill.infra.rundir import RunLock
from odedistill.infra.students import read_student
from tests.test_hostile import cli, metrics_steps, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

MODULE = "hostile_user_mod"
USER_MODULE = """
import torch
from odedistill import ODESystem

class Decay(ODESystem):
    def __init__(self, rate=1.0, T=0.5):
        self.rate, self.t_start, self.t_end, self.state_shape = rate, 0.0, T, (2,)

    def f(self, x, t, cond=None):
        return -self.rate * x

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.randn(n, 2, generator=generator, dtype=dtype)
"""
RECIPE = f"""
[run]
name = "user"
device = "cpu"

[system]
kind = "{MODULE}:Decay"

[system.args]
rate = 2.0

[student]
width = 16
depth = 1

[scheme]
N = 8
grid = "uniform"

[train]
batch = 16
iterations = 6
log_every = 3
checkpoint_every = 3

[eval]
enabled = false
"""
#: a module that leaves a mark when it is imported
PAYLOAD = "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('x')\nclass X: pass\n"


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> Path:
    """A trained run of a user's own system; its module is then forgotten and moved away."""
    root = tmp_path_factory.mktemp("user")
    (root / f"{MODULE}.py").write_text(textwrap.dedent(USER_MODULE))
    (root / "user.toml").write_text(RECIPE)
    code, err = cli("run", root / "user.toml", "--out", root / "run", "--no-progress")
    assert code == 0, err
    sys.modules.pop(MODULE, None)
    hidden = root / "hidden"
    hidden.mkdir()
    (root / f"{MODULE}.py").rename(hidden / f"{MODULE}.py")
    return root / "run"


def forge(ckpt: Path, out: Path, edit) -> Path:
    """A copy of ``ckpt`` edited by ``edit(state)``, its checksums recomputed as a forger would."""
    state = load_checkpoint(ckpt)
    edit(state)
    state["checksums"] = checksums(state)
    torch.save(state, out)
    return out


def test_a_user_systems_student_samples_from_data_without_importing_its_module(user_run):
    student = odedistill.load_student(user_run)
    assert MODULE not in sys.modules
    x = student.sample(torch.randn(5, 2))
    assert x.shape == (5, 2) and torch.isfinite(x).all()
    loaded = read_student(user_run)
    assert loaded.system is None and MODULE not in sys.modules
    with pytest.raises(UserError, match=f"name it again: --system {MODULE}:Decay"):
        loaded.require_system()


def test_a_forged_spec_never_runs_the_module_it_names(user_run, tmp_path):
    """A payload beside the run and specs that name it (or the standard library's ``this``),
    with valid checksums: sampling refuses in one line and imports nothing."""
    (tmp_path / "payload.py").write_text(PAYLOAD)
    for kind in ("payload:X", "this:X", "odedistill.cli:main"):

        def edit(state, kind=kind):
            spec = json.loads(state["student"])
            spec["system"] = {"kind": kind, "path": str(tmp_path), "args": {}}
            state["student"] = json.dumps(spec)

        forged = forge(latest_checkpoint(user_run), tmp_path / "forged.pt", edit)
        before = set(sys.modules)
        code, err = cli("sample", forged, "--out", tmp_path / "s.npz", cwd=tmp_path)
        one_line_error(code, err)
        assert "--system" in err
        assert not (tmp_path / "RAN").exists()
        assert {"payload", "this"}.isdisjoint(set(sys.modules) - before)
        assert not (tmp_path / "s.npz").exists()


def test_the_user_names_the_system_again_to_sample_from_the_command_line(user_run, tmp_path):
    hidden = user_run.parent / "hidden"
    out = tmp_path / "s.npz"
    code, err = cli("sample", user_run, "--system", f"{MODULE}:Decay", "--n", "8", "--out", out,
                    cwd=hidden)  # fmt: skip
    assert code == 0, err
    sys.modules.pop(MODULE, None)
    import numpy as np

    data = np.load(out)
    assert data[data.files[0]].shape[0] == 8
    # a built-in system's run needs (and takes) no --system
    code, err = cli("sample", user_run, "--system", "nope", "--out", out)
    one_line_error(code, err)


@pytest.mark.parametrize("part", ["optimizer", "config", "student", "rng"])
def test_the_checksum_covers_everything_a_checkpoint_holds(user_run, tmp_path, part):
    """Edit one part without fixing the checksum: reading (resume or sample) refuses the file."""
    state = load_checkpoint(latest_checkpoint(user_run))
    if part == "optimizer":
        for moments in state["optimizer"]["state"].values():
            moments["exp_avg"].fill_(1e30)
    elif part == "config":
        state["config"] = state["config"].replace('"lr": 0.0002', '"lr": 5.0')
    elif part == "student":
        state["student"] = state["student"].replace('"rate": 2.0', '"rate": 3.0')
    else:
        first = next(iter(state["rng"]))
        state["rng"][first] = torch.zeros_like(state["rng"][first])
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    code, err = cli("sample", edited, "--out", tmp_path / "s.npz")
    one_line_error(code, err)
    assert "damaged" in err and "checksum" in err


def test_a_refused_run_never_removes_the_live_runs_folder(tiny_recipe, tmp_path):
    """The folder of a live run (its lock held): a second run on it is refused and leaves every
    file of the first in place."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with RunLock(run):
        code, err = cli("run", tiny_recipe, "--out", run, "--no-progress")
        one_line_error(code, err)
        assert "in use by process" in err
        assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json", "metrics.jsonl"]


def _run_in_child(args: list[str], err_path: Path, go) -> None:
    """A forked child: wait for ``go``, then ``odedistill ARGS`` with stderr to ``err_path``."""
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    go.wait()
    from odedistill.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    sys.stderr.flush()
    os._exit(code)


def test_two_runs_started_together_have_one_winner_whose_folder_stays(tiny_recipe, tmp_path):
    """Two processes on one --out, released together (three times): one trains, the other is
    refused in one line, and the winner's files are all there at the end."""
    import multiprocessing

    # one run here first, so that the children inherit every import instead of each making them
    code, err = cli("run", tiny_recipe, "--out", tmp_path / "warm", "--no-progress", "--set",
                    "eval.enabled=false", "--set", "train.iterations=1")  # fmt: skip
    assert code == 0, err
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        run = tmp_path / f"r{round_}"
        args = ["run", str(tiny_recipe), "--out", str(run), "--no-progress", "--set",
                "eval.enabled=false", "--set", "train.iterations=20"]  # fmt: skip
        go = ctx.Event()
        errs = [tmp_path / f"err{round_}{k}" for k in range(2)]
        procs = [ctx.Process(target=_run_in_child, args=(args, e, go)) for e in errs]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(timeout=300)
        results = [(p.exitcode, e.read_text()) for p, e in zip(procs, errs, strict=True)]
        assert sorted(code for code, _ in results) == [0, 2], results
        loser = next(err for code, err in results if code == 2)
        assert "in use by process" in loser or "already holds a run" in loser, loser
        assert (run / "config.json").is_file() and latest_checkpoint(run) is not None
        assert metrics_steps(run) == [10, 20] and not (run / ".lock").exists()


def test_a_lock_is_never_seen_empty(tmp_path):
    """The lock file appears with its holder's record in one step (a reader never finds it
    empty and takes it as stale)."""
    lock = RunLock(tmp_path).acquire()
    record = json.loads((tmp_path / ".lock").read_text())
    assert record["pid"] == os.getpid()
    assert not list(tmp_path.glob(".lock.*"))
    lock.release()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        path = atomic_write_text(tmp_path / "config.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_a_full_disk_is_named_whatever_the_writer_raised(tmp_path):
    """Injection: a writer that fails as torch.save to a path does (a RuntimeError over
    ENOSPC) becomes OSError(ENOSPC) naming the file; no temporary file is left."""

    def write(tmp):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from None

    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "ckpt.pt", write)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "ckpt.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 250 kB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=250k", "tmpfs", str(where)],
                              capture_output=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("mount is not available")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", str(where)], capture_output=True, timeout=30)


def test_a_full_disk_is_one_line_on_a_real_small_filesystem(tiny_recipe, small_disk):
    run = small_disk / "r"
    code, err = cli("run", tiny_recipe, "--out", run, "--set", "student.width=96",
                    "--set", "eval.enabled=false", "--no-progress")  # fmt: skip
    one_line_error(code, err)
    assert "disk full" in err and "Traceback" not in err
    assert not run.exists() or latest_checkpoint(run) is None
    assert not list(small_disk.rglob(".*.tmp"))


def test_outputs_and_fid_inputs_are_checked_before_the_first_step(tiny_recipe, tmp_path):
    """eval.json already a folder, or FID during training with a reference of the wrong
    dimension or of 2-D states: refused before any step, the new run folder removed."""
    import numpy as np

    from odedistill.evaluation.fid import save_ref
    from tests.test_fid import make_tiny_detector

    run = tmp_path / "r"
    (run / "eval.json").mkdir(parents=True)
    code, err = cli("run", tiny_recipe, "--out", run, "--no-progress")
    one_line_error(code, err)
    assert "eval.json" in err and not (run / "metrics.jsonl").exists()
    detector = make_tiny_detector(tmp_path / "tiny.pt")
    ref = save_ref(tmp_path / "ref.npz", np.zeros(10), np.eye(10))
    fid = ["--set", "eval.fid_every=20", "--set", f'eval.fid_ref="{ref}"',
           "--set", f'eval.fid_detector="{detector}"']  # fmt: skip
    code, err = cli("run", tiny_recipe, "--out", tmp_path / "f", "--no-progress", *fid)
    one_line_error(code, err)
    assert "FID needs image states" in err and not (tmp_path / "f").exists()


def test_a_sharded_index_naming_bin_shards_is_refused_like_bin_weights(tmp_path):
    pytest.importorskip("diffusers")
    from odedistill.teachers.diffusers_load import load_diffusers_teacher

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    (tmp_path / "scheduler_config.json").write_text("{}")
    index = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"conv.weight": "model-00001.bin"}}))
    (tmp_path / "model-00001.bin").write_bytes(b"\x80\x02N.")
    with pytest.raises(UserError, match=r"pickled \.bin weights.*safe_serialization=True"):
        load_diffusers_teacher(tmp_path)


def test_fid_ref_that_is_not_an_npz_says_so(tmp_path, tiny_recipe):
    images = tmp_path / "images.npz"
    import numpy as np

    np.savez(images, images=np.zeros((4, 8, 8, 3), np.uint8))
    code, err = cli("fid", images, "--ref", tiny_recipe, "--detector", tmp_path / "d.pt")
    one_line_error(code, err)
    assert "is not an .npz file" in err and "pickled" not in err
