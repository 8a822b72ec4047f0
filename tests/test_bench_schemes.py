"""The residual-scheme benchmark: --quick's report structure, fitted derivative orders, CLI errors (never timings)."""

import json
import math

import pytest
import torch

from odedistill.bench.report import PLOTS, SECTIONS
from odedistill.bench.schemes import (
    SCHEME_NAMES,
    BenchSettings,
    derivative_accuracy,
    fitted_order,
    image_statistics,
)
from odedistill.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``odedistill bench schemes --quick`` once, through the command line (about a minute)."""
    out = tmp_path_factory.mktemp("bench") / "schemes"
    main(["bench", "schemes", "--quick", "--out", str(out)])
    return out, json.loads((out / "results.json").read_text())


def test_quick_report_structure(quick_run):
    out, results = quick_run
    report = (out / "report.md").read_text()
    headings = [ln[3:].strip() for ln in report.splitlines() if ln.startswith("## ")]
    assert headings == list(SECTIONS)
    for name in PLOTS.values():
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in report, f"{name} is not shown in report.md"
    assert set(results) == {"meta", "derivative", "distillation", "cost", "stability"}
    meta = results["meta"]
    assert meta["preset"] == "quick"
    assert meta["command"].startswith("odedistill bench schemes --quick")
    assert meta["date"] and meta["wall_seconds"] > 0
    for key in ("cpu", "logical_cores", "python", "torch", "odedistill", "gpu"):
        assert key in meta["machine"], key
    assert "load_average_before" in meta
    assert meta["command"] in report


def test_quick_results_content(quick_run):
    _, r = quick_run
    # distillation: every system and N has the three students and the teacher's baselines
    d = r["distillation"]
    assert set(d["systems"]) == {"ring", "linear", "pendulum"}
    for sysd in d["systems"].values():
        assert [row["N"] for row in sysd["rows"]] == d["Ns"]
        for row in sysd["rows"]:
            assert set(row["students"]) == set(SCHEME_NAMES)
            assert row["euler_nfe"] == row["N"] - 1
            for s in row["students"].values():
                assert s["diverged_at"] is not None or math.isfinite(s["rel_error"])
        eul = [row["euler"] for row in sysd["rows"]]
        assert eul == sorted(eul, reverse=True), "Euler error must fall with N"
    # cost: ratios relative to upwind, evaluations counted by a hook match the declared ones
    for net in r["cost"]["nets"].values():
        rows = net["schemes"]
        assert rows["upwind"]["time_ratio"] == pytest.approx(1.0)
        for name in SCHEME_NAMES:
            e = rows[name]
            assert e["evaluations_measured"] == e["evaluations_declared"]
            assert e["ms_per_iteration"] > 0
    assert "ddpmpp" in r["cost"]["skipped"] or "ddpmpp" in r["cost"]["nets"]
    # stability: a track per scheme with the checkpoints, and reference rows
    s = r["stability"]
    for name in SCHEME_NAMES:
        steps = [p["step"] for p in s["schemes"][name]["track"]]
        assert steps == s["checkpoints"]
        assert steps[0] == 0 and steps[-1] == s["iterations"]
        for p in s["schemes"][name]["track"]:
            assert 0 <= p["far_saturated"] <= p["saturated"] <= 1
    assert s["reference"]["exact_endpoints"]["rel_error"] == 0


def test_quick_fitted_orders(quick_run):
    _, r = quick_run
    order = r["derivative"]["summary_order"]
    assert abs(order["upwind"] - 1) < 0.15, order
    assert abs(order["central"] - 2) < 0.25, order
    assert order["autodiff"] is None  # exact: no order to fit
    assert r["derivative"]["autodiff_max_error"] < 1e-12


def test_derivative_orders_per_trajectory():
    d = derivative_accuracy(BenchSettings(deriv_Ns=[40, 80, 160, 320], deriv_samples=4))
    for key, t in d["trajectories"].items():
        assert abs(t["schemes"]["upwind"]["fitted_order"] - 1) < 0.1, key
        assert abs(t["schemes"]["central"]["fitted_order"] - 2) < 0.15, key
        assert t["schemes"]["autodiff"]["exact"], key
        assert max(t["schemes"]["autodiff"]["errors"]) < 1e-12, key


def test_fitted_order_of_a_power_law():
    Ns = [10, 20, 40, 80]
    assert fitted_order(Ns, [3.0 * n**-1.5 for n in Ns]) == pytest.approx(1.5)
    assert fitted_order([10], [0.1]) is None


def test_image_statistics():
    x = torch.tensor([[0.0, 0.5, -1.1, 2.0]]).repeat(2, 1)
    st = image_statistics(x, x)
    assert st["saturated"] == pytest.approx(0.5)
    assert st["far_saturated"] == pytest.approx(0.25)
    assert st["max_abs"] == pytest.approx(2.0)
    assert st["std_across_samples"] == 0 and st["rel_error"] == 0


@pytest.mark.parametrize("args", [["--device", "tpu"], ["--device", "cuda"]])
def test_bad_device_exits_2_with_one_line(args, tmp_path, capsys):
    if args[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as e:
        main(["bench", "schemes", "--quick", *args, "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "x").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(SystemExit) as e:
        main(["bench", "schemes", "--quick", "--out", str(f)])
    assert e.value.code == 2
    assert "not a folder" in capsys.readouterr().err
