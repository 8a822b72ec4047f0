"""The learned-teacher benchmark's --quick preset: its report, every student and the teacher's
curves on the FD code path (structure and consistency, never timings)."""

import json
import math

import pytest

from benchmarks.learned_teacher import main
from benchmarks.learned_teacher.bench import FLOWMAP_STEPS, QUICK, students
from benchmarks.learned_teacher.data import DATA_DIR, REF_FILE, TRAIN_REF_FILE
from benchmarks.learned_teacher.report import PLOT, SECTIONS, lands
from odedistill.evaluation.fid import fid_from_stats, load_ref

pytest.importorskip("sklearn")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "learned_teacher"
    main(["--quick", "--out", str(out)])
    return out, json.loads((out / "results.json").read_text())


def test_report_sections_plot_and_command(quick_run):
    out, _ = quick_run
    report = (out / "report.md").read_text()
    headings = [ln[3:].strip() for ln in report.splitlines() if ln.startswith("## ")]
    assert headings == list(SECTIONS)
    assert (out / PLOT).read_bytes()[:8] == PNG_MAGIC
    assert (out / "teacher_heun.png").read_bytes()[:8] == PNG_MAGIC
    assert "`python -m benchmarks.learned_teacher --quick`" in report
    assert "at the start" in report and "at the end" in report  # the machine's load recorded


def test_every_student_and_the_teacher_curves_are_scored(quick_run):
    _, results = quick_run
    assert [(r["student"], r["scheme"]) for r in results["students"]] == students()
    for r in results["students"]:
        steps = FLOWMAP_STEPS if r["student"] == "flowmap" else [1]
        assert sorted(int(k) for k in r["fd"]) == steps
        assert all(math.isfinite(v) for v in r["fd"].values()) and r["iterations"] >= 1
    t = results["teacher"]
    for method in ("euler", "heun"):
        assert sorted(int(k) for k in t["curve"][method]) == QUICK.teacher_nfe
    # one evaluation of Heun is one Euler step: the same samples, the same FD
    assert t["curve"]["heun"]["1"] == t["curve"]["euler"]["1"]
    floor = fid_from_stats(*load_ref(DATA_DIR / TRAIN_REF_FILE), *load_ref(DATA_DIR / REF_FILE))
    assert t["data_floor"] == floor and t["num_images"] == QUICK.fid_num


def test_where_a_one_step_fd_lands_on_a_curve():
    curve = {1: 100.0, 2: 50.0, 4: 10.0, 8: 5.0}
    assert lands(30.0, curve).startswith("between 2 (50) and 4 (10)")
    assert lands(200.0, curve).startswith("above 1 evaluation")
    assert lands(5.0, curve).startswith("at or below its best")


def test_a_screen_scores_the_raw_weights_and_every_ema_of_one_run():
    from dataclasses import replace

    from benchmarks.learned_teacher.screen import EMA_RATES, screen

    out = screen(replace(QUICK), ["student.steps=[2]", "student.p_T=0.5"])
    assert out["student"]["steps"] == [2] and out["student"]["p_T"] == 0.5  # the change applied
    assert list(out["fd"]) == ["raw", *(f"ema{r!r}" for r in EMA_RATES)]
    for fd in out["fd"].values():
        assert sorted(int(k) for k in fd) == FLOWMAP_STEPS
        assert all(math.isfinite(v) for v in fd.values())
    assert out["iterations"] >= 1
