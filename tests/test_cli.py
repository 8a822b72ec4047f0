"""The command line end to end on a tiny recipe: run, its files and eval.json, sample, version."""

import json

import numpy as np

from odedistill import __version__
from tests.conftest import invoke, run_cli


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"odedistill {__version__}"


def test_run_then_sample(tiny_run_source, tmp_path):
    out, r = tiny_run_source  # `odedistill run tiny.toml --out run --no-progress` in a subprocess
    assert r.returncode == 0, r.stderr
    for name in ["config.json", "config.toml", "metrics.jsonl", "eval.json", "samples.png"]:
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["iterations"] == 40 and cfg["scheme"]["N"] == 20
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [10, 20, 30, 40]
    assert all(np.isfinite(m["loss"]) for m in metrics)

    report = json.loads((out / "eval.json").read_text())
    samplers = report["samplers"]
    expected = {"student", "teacher_euler_19", "euler_1", "euler_2", "heun_1", "heun_2"}
    assert expected <= set(samplers)
    assert {"student_raw", "student_ema0.99"} <= set(samplers)
    assert samplers["teacher_euler_19"]["nfe"] == 19 and samplers["student"]["nfe"] == 1
    for entry in samplers.values():
        assert entry["trajectory_rel_error"] >= 0 and entry["sliced_w1"] >= 0
    # one-step Euler and Heun at one evaluation are the same sampler
    assert samplers["heun_1"] == samplers["euler_1"]
    # many Euler steps are far closer to the exact solution than one
    assert (
        samplers["teacher_euler_19"]["trajectory_rel_error"]
        < samplers["euler_1"]["trajectory_rel_error"]
    )
    assert report["data_floor_sliced_w1"] > 0 and report["n_heldout"] == 64

    npz = tmp_path / "s.npz"
    r = invoke("sample", out, "--n", "16", "--seed", "1", "--out", npz)
    assert r.returncode == 0, r.stderr
    with np.load(npz) as f:
        assert f["samples"].shape == (16, 2) and np.isfinite(f["samples"]).all()
    png = tmp_path / "s.png"
    r = invoke("sample", out, "--n", "16", "--out", png)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_bad_input_exits_2(tmp_path):
    r = run_cli("sample", str(tmp_path / "missing"), "--out", str(tmp_path / "x.npz"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()
