"""`odedistill eval`: FID of every checkpoint and EMA of a trained run, into fid.json and fid.csv."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from odedistill.api.fid_runs import evaluate_checkpoint
from odedistill.evaluation.fid import save_ref
from odedistill.evaluation.results import FID_CSV, FID_JSON, read_results
from tests.test_fid import FEATURES, make_tiny_detector

REPO = Path(__file__).resolve().parents[1]

RECIPE = """
[run]
name = "tiny"
device = "cpu"
[teacher]
preset = "digits"
count = 20
[student]
net = "unet"
channels = 8
[scheme]
N = 10
[train]
iterations = 5
batch = 8
ema_rates = [0.9, 0.99]
checkpoint_every = 3
keep_checkpoints = 3
[eval]
enabled = false
"""

WEIGHTS = ["ema0.9", "ema0.99", "raw"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _main(*args: str) -> int:
    """Run the command line in this process; its exit status (0 when it returns)."""
    from odedistill.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A trained tiny run, a tiny TorchScript detector and reference statistics from fid-ref."""
    sklearn = pytest.importorskip("sklearn.datasets")
    from odedistill.api.run import run_recipe

    root = tmp_path_factory.mktemp("eval")
    (root / "tiny.toml").write_text(RECIPE)
    run_recipe(root / "tiny.toml", out=root / "run", show_progress=False)
    detector = make_tiny_detector(root / "tiny-inception.pt")
    digits = sklearn.load_digits().images[:300]  # 0..16, as the teacher's means
    images = np.clip((digits / 8.0 - 1.0) * 127.5 + 128, 0, 255).astype(np.uint8)[:, None]
    np.savez(root / "digits.npz", images=images)
    assert _main("fid-ref", root / "digits.npz", "--out", root / "ref.npz",
                 "--detector", detector, "--quiet") == 0  # fmt: skip
    return {"root": root, "run": root / "run", "detector": detector, "ref": root / "ref.npz"}


def _copy_run(setup: dict[str, Path], dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(setup["run"], dest))


def test_eval_scores_every_checkpoint_and_ema(setup, tmp_path, capsys):
    run = _copy_run(setup, tmp_path / "run")
    code = _main("eval", run, "--ref", setup["ref"], "--detector", setup["detector"],
                 "--num", "24", "--batch", "8", "--quiet")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    results = read_results(run)
    assert [(r["step"], r["weights"]) for r in results] == [
        (step, w) for step in (3, 5) for w in WEIGHTS
    ]
    for r in results:
        assert math.isfinite(r["fid"]) and r["fid"] > 0
        assert r["num_images"] == 24 and r["seeds"] == "0-23"
        assert r["checkpoint"] == f"ckpt-{r['step']:08d}.pt"
    assert len(out.strip().splitlines()) == 6
    with open(run / FID_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), r["weights"], float(r["fid"])) for r in rows] == [
        (r["step"], r["weights"], r["fid"]) for r in results
    ]
    json.loads((run / FID_JSON).read_text())  # valid JSON
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporaries

    # Rerunning one checkpoint replaces its results; other seeds are kept beside them.
    assert _main("eval", run, "--ref", setup["ref"], "--detector", setup["detector"],
                 "--ckpt", "5", "--weights", "0.99", "--num", "24", "--quiet") == 0  # fmt: skip
    assert len(read_results(run)) == 6
    assert _main("eval", run, "--ref", setup["ref"], "--detector", setup["detector"],
                 "--ckpt", "latest", "--weights", "ema", "--seeds", "100-123", "--quiet") == 0  # fmt: skip
    again = read_results(run)
    assert len(again) == 7
    assert [(r["step"], r["weights"]) for r in again if r["seeds"] == "100-123"] == [(5, "ema0.9")]


def test_eval_fid_equals_sample_to_pngs_then_fid(setup, tmp_path):
    """The in-memory path gives the FID that `sample` to PNG files and `fid` on them give."""
    run = _copy_run(setup, tmp_path / "run")
    common = ["--ref", setup["ref"], "--detector", setup["detector"], "--quiet"]
    assert _main("eval", run, "--ckpt", "5", "--weights", "0.99", "--seeds", "0-19",
                 "--batch", "8", *common) == 0  # fmt: skip
    (result,) = read_results(run)
    pngs = tmp_path / "pngs"
    assert _main("sample", run / "checkpoints" / "ckpt-00000005.pt", "--weights", "0.99",
                 "--seeds", "0-19", "--batch", "8", "--out", pngs, "--subdirs", "--quiet") == 0  # fmt: skip
    assert _main("fid", pngs, "--batch", "8", "--out", tmp_path / "fid.json", *common) == 0
    fid = json.loads((tmp_path / "fid.json").read_text())
    assert fid["num_images"] == 20
    assert fid["fid"] == pytest.approx(result["fid"], rel=1e-9, abs=1e-12)


def test_evaluate_checkpoint_hook_leaves_the_rng_alone(setup, tmp_path):
    run = _copy_run(setup, tmp_path / "run")
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    records = evaluate_checkpoint(
        run, 3, ref=setup["ref"], detector=setup["detector"], num=16, weights="ema", device="cpu"
    )
    assert torch.equal(torch.get_rng_state(), before)
    assert [(r["step"], r["weights"]) for r in records] == [(3, "ema0.9")]
    assert read_results(run) == records
    records = evaluate_checkpoint(
        run,
        run / "checkpoints" / "ckpt-00000005.pt",
        ref=setup["ref"],
        detector=setup["detector"],
        num=16,
        weights="0.99,raw",
        write=False,
    )
    assert [r["weights"] for r in records] == ["ema0.99", "raw"]
    assert len(read_results(run)) == 1  # write=False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eval_on_two_gloo_ranks_matches_one_process(setup, tmp_path):
    run = _copy_run(setup, tmp_path / "run")
    args = ["eval", str(run), "--ref", str(setup["ref"]), "--detector", str(setup["detector"]),
            "--ckpt", "5", "--weights", "ema", "--num", "20", "--batch", "5", "--device", "cpu",
            "--quiet"]  # fmt: skip
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "odedistill", *args],
            cwd=REPO,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "OMP_NUM_THREADS": "1",
            },  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[1][0] == ""  # only rank 0 reports
    (two,) = read_results(run)
    (one,) = evaluate_checkpoint(
        run, 5, ref=setup["ref"], detector=setup["detector"], num=20, weights="ema",
        batch=5, device="cpu", write=False,
    )  # fmt: skip
    # Same seeds; batches differ between the ranks and one process, so float32 round-off in
    # the network can move a rare pixel by one level.
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-3)
    assert two["num_images"] == 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "{tmp}/nowhere", "--ref", "{ref}", "--detector", "{det}"], "no run directory"),
        (
            ["eval", "{run}", "--ref", "{ref}", "--detector", "{tmp}/inception-2015-12-05.pt"],
            "inception-2015-12-05.pt",
        ),  # fmt: skip
        (["eval", "{run}", "--ref", "{tmp}/ref.npz", "--detector", "{det}"], "not found"),
        (
            ["eval", "{run}", "--ref", "{ref}", "--detector", "{det}", "--weights", "0.5"],
            "no EMA with rate 0.5",
        ),  # fmt: skip
        (
            ["eval", "{run}", "--ref", "{ref}", "--detector", "{det}", "--ckpt", "4"],
            "no checkpoint of step 4",
        ),  # fmt: skip
        (["eval", "{run}", "--ref", "{ref}", "--detector", "{det}", "--num", "1"], "at least 2"),
        (
            [
                "eval",
                "{run}",
                "--ref",
                "{ref}",
                "--detector",
                "{det}",
                "--num",
                "3",
                "--seeds",
                "0-9",
            ],
            "disagrees",
        ),  # fmt: skip
        (["eval", "{run}", "--ref", "{bad_ref}", "--detector", "{det}"], "same detector"),
    ],
)
def test_eval_bad_input_exits_2_with_one_line_and_writes_nothing(
    setup, tmp_path, capsys, args, message
):
    run = _copy_run(setup, tmp_path / "run")
    bad_ref = save_ref(tmp_path / "bad_ref.npz", np.zeros(FEATURES + 1), np.eye(FEATURES + 1))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    values = {"tmp": tmp_path, "run": run, "ref": setup["ref"], "det": setup["detector"],
              "bad_ref": bad_ref}  # fmt: skip
    code = _main(*[a.format(**values) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")
    assert message in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (run / FID_JSON).exists() and not (run / FID_CSV).exists()


def test_fid_during_training(setup, tmp_path):
    """eval.fid_every scores each K-th checkpoint while training, into fid.json and metrics."""
    from odedistill.api.run import run_recipe

    recipe = tmp_path / "fid.toml"
    recipe.write_text(
        RECIPE.replace("checkpoint_every = 3", "checkpoint_every = 2").replace(
            "iterations = 5", "iterations = 4"
        )
        + f'fid_every = 2\nfid_num = 8\nfid_ref = "{setup["ref"]}"\nfid_detector = "{setup["detector"]}"\n'
    )
    run_recipe(recipe, out=tmp_path / "run", show_progress=False)
    records = read_results(tmp_path / "run")
    assert sorted((r["step"], r["weights"]) for r in records) == sorted(
        (s, w) for s in (2, 4) for w in WEIGHTS
    )
    assert all(math.isfinite(r["fid"]) and r["num_images"] == 8 for r in records)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [x for x in lines if "fid" in x]
    assert [x["step"] for x in logged] == [2, 4] and set(logged[0]["fid"]) == set(WEIGHTS)
    # a training run with FID on scores the same as eval afterwards (the RNG is untouched)
    again = evaluate_checkpoint(
        tmp_path / "run",
        4,
        ref=setup["ref"],
        detector=setup["detector"],
        num=8,
        weights="raw",
        device="cpu",
        write=False,
    )
    assert again[0]["fid"] == pytest.approx(logged[1]["fid"]["raw"], rel=1e-9)


def test_fid_during_training_needs_its_files(tmp_path):
    from odedistill.errors import UserError
    from odedistill.infra.recipes import load_config

    recipe = tmp_path / "fid.toml"
    recipe.write_text(RECIPE + "fid_every = 3\n")
    with pytest.raises(UserError, match="'eval.fid_every' needs 'eval.fid_ref'"):
        load_config(recipe)
    recipe.write_text(RECIPE + 'fid_every = 4\nfid_ref = "r.npz"\nfid_detector = "d.pt"\n')
    with pytest.raises(UserError, match="multiple of 'train.checkpoint_every'"):
        load_config(recipe)
