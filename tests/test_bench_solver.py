"""The solver benchmark: RK4's order, the searches' minimality, --quick's report and results (never timings)."""

import json
import math

import pytest
import torch

from benchmarks.solver import main
from benchmarks.solver.baselines import (
    RTOLS,
    fewest_rk4_steps,
    loosest_rtol,
    norm_relative,
    rk4,
    scipy_solve,
)
from benchmarks.solver.report import SECTIONS
from benchmarks.solver.run import break_even, recall_of_worst, spearman
from odedistill import LinearODE

pytestmark = pytest.mark.usefixtures("one_thread")
SYSTEM = LinearODE(t_start=0.0, t_end=2.0)


@pytest.fixture(scope="module")
def z():
    return SYSTEM.sample_initial(64, torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture(scope="module")
def exact(z):
    return SYSTEM.exact_solution(z, torch.full((64,), 2.0, dtype=torch.float64))


def test_rk4_is_fourth_order(z, exact):
    errors = [norm_relative(rk4(SYSTEM, z, None, n), exact) for n in (8, 16, 32)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert all(3.8 < p < 4.2 for p in orders), orders


def test_fewest_rk4_steps_is_the_fewest(z, exact):
    target = 1e-4
    n = fewest_rk4_steps(SYSTEM, z, None, exact, target)
    assert norm_relative(rk4(SYSTEM, z, None, n), exact) <= target
    assert norm_relative(rk4(SYSTEM, z, None, n - 1), exact) > target


@pytest.mark.parametrize("method", ["DOP853", "LSODA"])
def test_scipy_batch_and_each_solve_the_same_problem(z, exact, method):
    batch = scipy_solve(SYSTEM, z[:4], None, method, 1e-10, vectorised=True)
    each = scipy_solve(SYSTEM, z[:4], None, method, 1e-10, vectorised=False)
    assert norm_relative(batch, exact[:4]) < 1e-7 and norm_relative(each, exact[:4]) < 1e-7
    rtol = loosest_rtol(SYSTEM, z[:4], None, exact[:4], 1e-3, method, vectorised=True)
    assert norm_relative(scipy_solve(SYSTEM, z[:4], None, method, rtol, True), exact[:4]) <= 1e-3
    looser = RTOLS[RTOLS.index(rtol) - 1]
    assert norm_relative(scipy_solve(SYSTEM, z[:4], None, method, looser, True), exact[:4]) > 1e-3


def test_break_even_and_recall():
    # 10 s of training, the student saves 1 ms per state over the solver: 10,000 states
    assert break_even(10.0, 1.0, 11.0, 10_000) == pytest.approx(10_000)
    assert break_even(10.0, 2.0, 1.0, 10_000) == math.inf
    error = torch.arange(100.0)
    assert recall_of_worst(error, error) == 1.0
    assert recall_of_worst(-error, error) == 0.0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m benchmarks.solver --quick`` once, through its command line (seconds)."""
    out = tmp_path_factory.mktemp("bench") / "solver"
    main(["--quick", "--out", str(out)])
    return out, json.loads((out / "results.json").read_text())


def test_quick_report_and_results(quick_run):
    out, r = quick_run
    report = (out / "report.md").read_text()
    headings = [ln[3:].strip() for ln in report.splitlines() if ln.startswith("## ")]
    assert headings == SECTIONS
    meta = r["meta"]
    assert meta["preset"] == "quick" and meta["command"] in report
    assert meta["machine"]["cpu_model"] and meta["load_average_before"]
    (row,) = r["rows"]
    assert row["system"] == "lotka" and row["n"] == meta["settings"]["n"]
    target = row["student"]["error"]
    assert row["rk4"]["error"] <= target
    for key in ("dop853_batch", "dop853_each", "lsoda_batch", "lsoda_each"):
        assert row[key]["rtol"] is None or row[key]["error"] <= target, key
    assert -1 <= row["check"]["spearman"] <= 1 and 0 <= row["check"]["recall_worst_5pct"] <= 1
    assert row["training"]["train_cpu_s"] > 0


def test_spearman_against_scipy():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, generator=g)
    b = a + torch.randn(200, generator=g)
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)
    assert spearman(a, a.exp()) == pytest.approx(1.0)


def test_a_run_of_some_systems_keeps_the_other_rows(tmp_path):
    """Rows of systems not rerun survive when the settings match (a field added since counts
    as its default), and are dropped when they do not."""
    import dataclasses

    from benchmarks.solver.run import earlier_rows
    from benchmarks.solver.settings import SolverSettings

    old = dataclasses.asdict(SolverSettings(systems=("lotka", "vdp")))
    del old["student"]
    rows = [{"system": "lotka"}, {"system": "vdp"}]
    meta = {"settings": old, "command": "python -m benchmarks.solver"}
    (tmp_path / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    kept = earlier_rows(tmp_path, SolverSettings(systems=("vdp",)))
    assert kept == [{"system": "lotka", "command": "python -m benchmarks.solver"}]
    assert earlier_rows(tmp_path, SolverSettings(systems=("vdp",), n=500)) == []
