"""The flow-map benchmark: --quick's report structure and entries, CLI errors (never timings)."""

import json
import math

import pytest

from benchmarks.flowmap import NFES, main
from benchmarks.flowmap.report import PLOT, SECTIONS
from odedistill.schemes import SCHEMES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m benchmarks.flowmap --quick`` on two systems, through its command line."""
    out = tmp_path_factory.mktemp("bench") / "flowmap"
    main(["--quick", "--systems", "ring", "pendulum", "--out", str(out)])
    return out, json.loads((out / "results.json").read_text())


def test_report_sections_plot_and_command(quick_run):
    out, results = quick_run
    report = (out / "report.md").read_text()
    headings = [ln[3:].strip() for ln in report.splitlines() if ln.startswith("## ")]
    assert headings == list(SECTIONS)
    assert (out / PLOT).read_bytes()[:8] == PNG_MAGIC
    assert f"]({PLOT})" in report
    assert "`python -m benchmarks.flowmap --quick`" in report
    assert list(results["meta"]["systems"]) == ["ring", "pendulum"]


def test_every_student_scheme_and_nfe_is_measured(quick_run):
    _, results = quick_run
    seen = {(r["system"], r["student"], r["scheme"]) for r in results["students"]}
    assert seen == {
        (s, k, sc)
        for s in ("ring", "pendulum")
        for k in ("flowmap", "pid")
        for sc in SCHEMES.names()
    }
    for r in results["students"]:
        nfes = sorted(int(k) for k in r["by_nfe"])
        assert nfes == (NFES if r["student"] == "flowmap" else [1]), r["student"]
        for entry in r["by_nfe"].values():
            assert math.isfinite(entry["trajectory_rel_error"]) and entry["sliced_w1"] >= 0
        assert sorted(int(k) for k in r["teacher"]["euler"]) == NFES
        if r["student"] == "flowmap":
            assert r["flow_map"]["jumps"], "the flow map itself is checked, not only endpoints"


def test_cost_is_a_ratio_of_the_two_students_in_one_run(quick_run):
    _, results = quick_run
    assert {(c["system"], c["scheme"]) for c in results["cost"]} == {
        (s, sc) for s in ("ring", "pendulum") for sc in SCHEMES.names()
    }
    for c in results["cost"]:
        s = c["seconds_per_iteration"]
        assert c["ratio"] == pytest.approx(s["flowmap"] / s["pid"])


def test_unknown_system_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--quick", "--systems", "lorenz", "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "lorenz" in err and "ring" in err
    assert not (tmp_path / "x").exists()
