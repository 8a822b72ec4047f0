"""The odesuite benchmark: --quick's report structure and content, the suite's systems, CLI errors (never timings)."""

import json
import math

import pytest
import torch

import odedistill
from benchmarks.odesuite import SUITE, VARIANTS, main
from benchmarks.odesuite.report import SECTIONS
from benchmarks.odesuite.training import early_stop


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m benchmarks.odesuite --quick`` once, through its command line (seconds)."""
    out = tmp_path_factory.mktemp("bench") / "odesuite"
    main(["--quick", "--out", str(out)])
    return out, json.loads((out / "results.json").read_text())


def test_quick_report_structure(quick_run):
    out, r = quick_run
    report = (out / "report.md").read_text()
    headings = [ln[3:].strip() for ln in report.splitlines() if ln.startswith("## ")]
    assert headings == SECTIONS
    meta = r["meta"]
    assert meta["preset"] == "quick" and meta["command"].startswith("python -m benchmarks.odesuite")
    assert meta["command"] in report
    for key in ("cpu_model", "cpu_count", "torch", "odedistill"):
        assert key in meta["machine"], key
    assert meta["load_average_before"] and meta["load_average_after"]


def test_quick_results_content(quick_run):
    _, r = quick_run
    systems = r["meta"]["settings"]["systems"]
    final = r["final"]["rows"]
    assert [row["system"] for row in final] == systems
    for row in final:
        assert row["evaluations"] in (1, 4) and row["tol"] == r["final"]["tol"]
        assert row["steps"] > 0 and math.isfinite(row["error"])
        assert row["median"] <= row["p95"] and row["met"] == (row["val_error"] <= row["tol"])
        assert row["ratio"] == pytest.approx(row["mean_rel_error"] / row["euler_error"])
        assert row["val_curve"] and row["loadavg_start"]
    ab = r["ablation"]
    assert ab["variants"] == ["defaults", "pid_grid"]
    assert {(x["variant"], x["system"]) for x in ab["rows"]} == {
        (v, s) for v in ab["variants"] for s in systems
    }


def test_early_stop_needs_two_consecutive_checks():
    curve = [{"step": 250 * k, "val_ratio": v} for k, v in enumerate([3, 1.2, 2, 1.4, 1.3, 1])]
    assert early_stop(curve, 1.5)["step"] == 1000
    assert early_stop(curve, 0.5) is None


@pytest.mark.parametrize("name", list(SUITE))
def test_suite_systems_are_well_posed(name):
    """Every system's field is finite on its initial states, Euler(N - 1) is within a few per
    cent of scipy, and conditions have the declared width."""
    spec = SUITE[name]
    system = spec.build()
    g = torch.Generator().manual_seed(0)
    z = system.sample_initial(64, g, dtype=torch.float64)
    c = system.sample_condition(64, g)
    assert (c is None) == (system.label_dim == 0)
    if c is not None:
        assert c.shape == (64, system.label_dim) and c.dtype.is_floating_point
        c = c.double()
    exact = odedistill.solve_reference(system, z, c)
    grid = odedistill.make_grid(spec.grid, spec.N, system.t_start, system.t_end).double()
    e = odedistill.euler(system, z, grid, c)
    rel = ((e - exact).norm(dim=1) / exact.norm(dim=1)).mean()
    assert 0.005 < rel < 0.06, float(rel)
    assert system.dim >= 2


def test_suite_covers_the_issue():
    assert len(SUITE) >= 10
    assert {"oscillator", "vdp_stiff", "kepler"} <= set(SUITE)  # issue 18's additions
    assert any(s.build().label_dim > 0 for s in SUITE.values())  # a family with a condition
    assert any(s.build().dim >= 3 for s in SUITE.values())
    assert set(VARIANTS) >= {"defaults", "pid_only", "no_causal", "grid_times", "stop_grad"}


@pytest.mark.parametrize(
    "args, words",
    [
        (["--systems", "nope"], "nope"),
        (["--variants", "nope"], "nope"),
        (["--parts", "other"], "--parts"),
        (["--budget", "0"], "positive"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, args, words):
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and words in err[-1]
