"""Shared fixtures: a tiny recipe that trains in a second, and a CLI runner in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    """A property test's number of examples: ``n`` in the default suite (sized so that the
    whole suite stays within its time budget), 10 n with HYPOTHESIS_PROFILE=deep."""
    return n * (10 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 1)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small-network tests: OpenMP's threads otherwise wait
    on cores that other processes hold, which makes tiny networks many times slower."""
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


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m odedistill ARGS`` in a subprocess, capturing output."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run(
        [sys.executable, "-m", "odedistill", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
