"""The residual-family benchmark: --quick's report structure and entries, CLI errors (never timings)."""

import json
import math

import pytest

from benchmarks.residuals import NFES, main
from benchmarks.residuals.budgets import decreasing
from benchmarks.residuals.report import PLOT, SECTIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAMILIES = ["lagrangian", "eulerian", "semigroup"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m benchmarks.residuals --quick`` on the ring, three families."""
    out = tmp_path_factory.mktemp("bench") / "residuals"
    main(["--quick", "--problems", "ring", "--families", *FAMILIES, "--out", str(out)])
    return out, json.loads((out / "results.json").read_text())


def test_report_sections_plot_and_command(quick_run):
    out, results = quick_run
    report = (out / "report.md").read_text()
    headings = [ln[3:].strip() for ln in report.splitlines() if ln.startswith("## ")]
    assert headings == list(SECTIONS)
    assert (out / PLOT).read_bytes()[:8] == PNG_MAGIC
    assert f"]({PLOT})" in report
    command = "python -m benchmarks.residuals --quick --problems ring --families " + " ".join(
        FAMILIES
    )
    assert f"`{command}`" in report
    assert results["meta"]["unavailable"] == {}


def test_every_family_is_trained_scored_and_timed(quick_run):
    _, results = quick_run
    assert sorted(r["family"] for r in results["runs"]) == sorted(FAMILIES)
    for r in results["runs"]:
        assert r["diverged_at"] is None and r["iterations"] >= 1
        assert sorted(int(k) for k in r["by_nfe"]) == NFES
        assert all(math.isfinite(v["trajectory_rel_error"]) for v in r["by_nfe"].values())
        assert r["grad_variance"] >= 0
        # the last restart is the last jump alone: both numbers are the same quantity
        d = r["error_by_start"]
        assert len(d["e_from"]) == len(d["jump"]) == max(NFES)
        assert d["e_from"][-1] == pytest.approx(d["jump"][-1], rel=1e-12)
    (cost,) = results["cost"]
    assert cost["ratio"]["lagrangian"] == 1.0 and set(cost["ratio"]) == set(FAMILIES)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--jobs", "0"], "--jobs 0"),
        (["--budget", "-1"], "--budget"),
        (["--problems", "moon"], "unknown problem 'moon'"),
        (["--families", "hamiltonian"], "unknown family 'hamiltonian'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--quick", "--out", str(tmp_path / "x"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_parts_merge_into_one_report_and_unlike_parts_are_refused(quick_run, tmp_path, capsys):
    out, results = quick_run
    part = tmp_path / "part.json"
    ring_only = {**results, "runs": results["runs"][:1]}
    part.write_text(json.dumps(ring_only))
    main(["--merge", str(out / "results.json"), "--out", str(tmp_path / "m")])
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    assert merged["runs"] == results["runs"] and merged["cost"] == results["cost"]
    assert (tmp_path / "m" / "report.md").read_text().count("## ") == len(SECTIONS)
    other = {**ring_only, "meta": {**results["meta"], "budget_cpu_seconds": 99.0}}
    part.write_text(json.dumps(other))
    with pytest.raises(SystemExit) as e:
        main(["--merge", str(out / "results.json"), str(part), "--out", str(tmp_path / "n")])
    assert e.value.code == 2 and "budget differs" in capsys.readouterr().err


def test_other_budgets_list_every_family_and_seed(quick_run, tmp_path):
    """A results.json of another --budget kept in budgets/ is reported with each seed's curve."""
    out, results = quick_run
    assert decreasing([3.0, 2.0, 1.0]) and not decreasing([3.0, 3.0, 1.0])
    command = "python -m benchmarks.residuals --quick --budget 2.5"
    other = {**results, "meta": {**results["meta"], "budget_cpu_seconds": 2.5, "command": command}}
    dest = tmp_path / "m"
    (dest / "budgets").mkdir(parents=True)
    (dest / "budgets" / "ring_2.5.json").write_text(json.dumps(other))
    main(["--merge", str(out / "results.json"), "--out", str(dest)])
    section = (dest / "report.md").read_text().split("## Other budgets")[1].split("## Reading")[0]
    assert f"**2.5 CPU-s per run**: `{command}`" in section
    rows = [ln for ln in section.splitlines() if ln.startswith("| ring |")]
    assert len(rows) == len(FAMILIES)
    for r in results["runs"]:
        (row,) = [ln for ln in rows if ln.startswith(f"| ring | {r['family']} |")]
        curve = [r["by_nfe"][str(K)]["trajectory_rel_error"] for K in NFES]
        assert f"{r['seed']}: " + " · ".join(f"{e:.4g}" for e in curve) in row
        # one seed: the mean curve is the seed's
        assert row.split(" | ")[4] == ("yes" if decreasing(curve) else "no")
    # the Targets section lists both measurements of each family's curve, by budget
    targets = (dest / "report.md").read_text().split("## Targets")[1].split("## Other budgets")[0]
    targets = targets.split("Every measurement of the same target")[1]
    base = results["meta"]["budget_cpu_seconds"]
    for r in results["runs"]:
        curve = [r["by_nfe"][str(K)]["trajectory_rel_error"] for K in NFES]
        mark = "yes" if decreasing(curve) else "no"
        line = next(ln for ln in targets.splitlines() if ln.startswith(f"- {r['family']}: "))
        assert f"ring {base:g} s {mark} · 2.5 s {mark}" in line or (
            f"ring 2.5 s {mark} · {base:g} s {mark}" in line
        )


def test_the_grid_euler_floor_is_recorded_and_reported(quick_run):
    out, results = quick_run
    for r in results["runs"]:
        grid = r["teacher_euler_grid"]
        assert grid["steps"] == 19  # the quick preset's ring grid has 20 points
        assert math.isfinite(grid["rel_error"]) and grid["rel_error"] > 0
    report = (out / "report.md").read_text()
    grid = results["runs"][0]["teacher_euler_grid"]
    assert f"whole collocation grid (19 steps): {grid['rel_error']:.4g}" in report


def _curves_run(budget, curves):
    """A results.json of the given mean curves: {(problem, family): [e1, e2, e4, e8]}."""
    return {
        "meta": {
            "budget_cpu_seconds": budget,
            "problems": {"ring": {}, "digits": {}, "pendulum": {}},
            "families": {f: {"problems": None} for f in ["lagrangian", "semigroup"]},
        },
        "runs": [
            {
                "problem": p,
                "family": f,
                "seed": 0,
                "by_nfe": {
                    str(K): {"trajectory_rel_error": e} for K, e in zip(NFES, c, strict=True)
                },
            }
            for (p, f), c in curves.items()
        ],
    }


def test_the_monotone_target_takes_each_family_at_its_best_setting():
    from benchmarks.residuals.report import best_settings

    flat, falling = [0.03, 0.02, 0.012, 0.0121], [0.04, 0.025, 0.015, 0.014]
    lower = [e / 8 for e in falling]
    runs = _curves_run(
        90,
        {
            ("ring", "lagrangian"): falling,
            ("pendulum", "lagrangian"): flat,
            ("pendulum", "lagrangian, central"): lower,  # lower everywhere: the best setting
            ("ring", "semigroup"): flat,
            ("pendulum", "semigroup"): falling,
        },
    )
    lines = best_settings(runs, None, ["ring", "digits", "pendulum"])
    lag = next(ln for ln in lines if ln.startswith("- lagrangian: "))
    semi = next(ln for ln in lines if ln.startswith("- semigroup: "))
    assert "pendulum (lagrangian, central) yes" in lag and lag.endswith("2 of 2.")
    assert "ring (semigroup) no" in semi and semi.endswith("1 of 2.")
    assert lines[-1].endswith("problems: none.")
    # a variant that is worse is not chosen, however its curve falls
    runs = _curves_run(
        90,
        {
            ("ring", "lagrangian"): falling,
            ("pendulum", "lagrangian"): flat,
            ("pendulum", "lagrangian, central"): [e * 8 for e in falling],
        },
    )
    lag = next(ln for ln in best_settings(runs, None, ["ring", "pendulum"]) if "lagrangian" in ln)
    assert "pendulum (lagrangian) no" in lag and lag.endswith("1 of 2.")
