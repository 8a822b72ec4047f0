"""Shared fixtures and helpers.

- One intra-op thread for the whole session, in this process and in every subprocess a test
  starts (``OMP_NUM_THREADS=1`` is set before torch is imported): the suite's networks are tiny,
  and on a shared two-core machine OpenMP's threads spin waiting on cores that other processes
  hold, which made single tests several times slower in CPU time as well as in wall time.
- ``TINY`` / ``tiny_recipe``: a ring-teacher recipe that trains in about a second.
- ``tiny_run``: ONE run of ``TINY`` made by ``odedistill run`` in a subprocess per test session
  (``tiny_run_source``), copied afresh for each test that asks, so a test may change or damage
  its copy. Use it wherever a test needs "some finished run" rather than a run of its own settings.
- ``EDM_TEACHER_KWARGS`` / ``tiny_edm_teacher`` and ``UNET2D_KWARGS`` / ``tiny_unet2d()``: small
  EDM and diffusers teacher networks for the CPU.
- Hypothesis profiles: ``ci`` by default, ``HYPOTHESIS_PROFILE=thorough`` for a longer search.
- ``run_cli`` runs ``python -m odedistill`` in a subprocess: use it where only a process shows the
  behaviour (the entry point, a signal, a kill, a lock held by another process). ``invoke`` runs
  the same ``odedistill.cli.main`` in this process with the same exit status, stdout and stderr,
  without paying a fresh interpreter and torch import each time: use it for everything else.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported here or in any subprocess

# Property tests: "ci" (the default) is sized for the suite's 5 minutes on two cores;
# HYPOTHESIS_PROFILE=thorough searches ten times longer.
settings.register_profile("ci", max_examples=120)
settings.register_profile("thorough", max_examples=1200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]

TINY = """
[run]
name = "tiny"
seed = 3
device = "cpu"

[teacher]
preset = "ring"
modes = 4

[student]
net = "mlp"
width = 32
depth = 2

[scheme]
kind = "upwind"
N = 20

[optim]
lr = 1e-3

[train]
batch = 32
iterations = 40
ema_rates = [0.9, 0.99]
log_every = 10
checkpoint_every = 20

[eval]
n_heldout = 64
nfe = [1, 2]
trajectories = 2
"""


def examples(n: int) -> int:
    """A property test's number of examples where it needs fewer than the profile's: ``n`` in
    the default ``ci`` profile (sized so that the whole suite stays within its time budget),
    10 n with HYPOTHESIS_PROFILE=thorough."""
    return n * (10 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 1)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module; the session already runs with one (kept for modules
    that ask for it explicitly, and restored afterwards in case a test changed it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="session")
def tiny_run_source(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``odedistill run tiny.toml --out run --no-progress`` in a subprocess, once per session:
    (the run directory, the finished process). Read-only: tests take a copy (``tiny_run``)."""
    root = tmp_path_factory.mktemp("tiny_run")
    (root / "tiny.toml").write_text(TINY)
    proc = run_cli("run", str(root / "tiny.toml"), "--out", str(root / "run"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return root / "run", proc


@pytest.fixture
def tiny_run(tiny_run_source, tmp_path_factory) -> Path:
    """A copy for this test alone of the session's trained ``TINY`` run (40 iterations,
    checkpoints at 20 and 40, EMAs 0.9 and 0.99, eval.json and samples.png), in a folder of its
    own beside ``tmp_path`` (so that ``tmp_path`` holds only what the test writes)."""
    return Path(shutil.copytree(tiny_run_source[0], tmp_path_factory.mktemp("tiny_run") / "run"))


#: a conditional EDM SongUNet small enough for the CPU (8x8 RGB, 4 classes)
EDM_TEACHER_KWARGS = dict(
    img_resolution=8,
    img_channels=3,
    label_dim=4,
    model_type="SongUNet",
    model_channels=8,
    channel_mult=[1, 2],
    num_blocks=1,
    attn_resolutions=[4],
)


@pytest.fixture
def edm_teacher_kwargs() -> dict:
    """EDMPrecond keyword arguments of a tiny conditional SongUNet (a fresh dict per test)."""
    return dict(EDM_TEACHER_KWARGS, channel_mult=list(EDM_TEACHER_KWARGS["channel_mult"]))


@pytest.fixture(scope="module")
def tiny_edm_teacher():
    """An EDMPrecond of ``EDM_TEACHER_KWARGS`` with random weights (seed 0), in eval mode."""
    import torch

    from odedistill.teachers.precond import EDMPrecond

    torch.manual_seed(0)
    return EDMPrecond(**EDM_TEACHER_KWARGS).eval().requires_grad_(False)


#: a two-level diffusers UNet2DModel with attention for 3x8x8 images (45k parameters)
UNET2D_KWARGS = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
    attention_head_dim=8,
)


def tiny_unet2d(seed: int = 0, **kwargs):
    """A randomly initialised (``torch.manual_seed(seed)``) UNet2DModel of ``UNET2D_KWARGS``,
    any of them replaced or added by ``kwargs``. Needs diffusers (in the ``dev`` extra)."""
    import diffusers
    import torch

    torch.manual_seed(seed)
    return diffusers.UNet2DModel(**{**UNET2D_KWARGS, **kwargs})


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m odedistill ARGS`` in a subprocess, capturing output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "odedistill", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def invoke(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``odedistill ARGS`` through ``odedistill.cli.main`` in this process: the exit status it
    would give the shell, and what it wrote on stdout and stderr (the shape of ``run_cli``)."""
    import torch

    from odedistill.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd, threads = os.getcwd(), torch.get_num_threads()
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(old_cwd)
        torch.set_num_threads(threads)  # a recipe's run.threads must not leak into other tests
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
