"""The residual-scheme benchmark: --quick's report structure, fitted derivative orders, CLI errors (never timings)."""

import json
import math

import pytest
import torch

from benchmarks.schemes import (
    BenchSettings,
    derivative_accuracy,
    fitted_order,
    image_statistics,
    main,
    scheme_names,
)
from benchmarks.schemes.report import PLOTS, SECTIONS

SCHEME_NAMES = scheme_names()

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m benchmarks.schemes --quick`` once, through its command line (about a minute)."""
    out = tmp_path_factory.mktemp("bench") / "schemes"
    main(["--quick", "--out", str(out)])
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
    assert meta["command"].startswith("python -m benchmarks.schemes --quick")
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
        main(["--quick", *args, "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "x").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(SystemExit) as e:
        main(["--quick", "--out", str(f)])
    assert e.value.code == 2
    assert "not a folder" in capsys.readouterr().err


def test_a_registered_scheme_joins_the_benchmark():
    """Schemes come from the registry: a fourth one is measured, upwind stays the reference."""
    from odedistill.schemes import SCHEMES, Upwind

    SCHEMES.register("upwind_again", Upwind, help="upwind under a second name")
    try:
        assert scheme_names()[0] == "upwind" and "upwind_again" in scheme_names()
        d = derivative_accuracy(BenchSettings(deriv_Ns=[40, 80, 160], deriv_samples=2))
    finally:
        SCHEMES.unregister("upwind_again")
    assert d["declared_order"]["upwind_again"] == 1
    for t in d["trajectories"].values():
        assert t["schemes"]["upwind_again"]["errors"] == t["schemes"]["upwind"]["errors"]


def test_report_of_four_schemes(quick_run, tmp_path):
    """The report and plots take any number of schemes (here a copy of central as a fourth)."""
    from benchmarks.schemes.report import write_report

    _, r = quick_run
    r = json.loads(json.dumps(r))
    new, old = "central_again", "central"
    r["meta"]["schemes"][new] = r["meta"]["schemes"][old]
    r["derivative"]["declared_order"][new] = r["derivative"]["declared_order"][old]
    r["derivative"]["summary_order"][new] = r["derivative"]["summary_order"][old]
    parts = [t["schemes"] for t in r["derivative"]["trajectories"].values()]
    parts += [row["students"] for s in r["distillation"]["systems"].values() for row in s["rows"]]
    parts += [net["schemes"] for net in r["cost"]["nets"].values()]
    parts += [r["stability"]["schemes"]]
    for part in parts:
        part[new] = part[old]
    pictures = {name: torch.zeros(4, 1, 8, 8) for name in ["exact endpoint", "data", *SCHEME_NAMES]}
    report = write_report(r, tmp_path, pictures).read_text()
    assert f"| N | {' | '.join([*SCHEME_NAMES, new])} | Euler N-1 steps |" in report
    assert f"| {new} / upwind |" in report
    rows = len(r["derivative"]["trajectories"]) + len(r["cost"]["nets"])
    rows += len(r["distillation"]["systems"]) + len(r["stability"]["schemes"][new]["track"])
    assert report.count(f"| {new} |") == rows  # table rows, and the distillation headers
    assert "Central_again beats upwind at" in report
    for name in PLOTS.values():
        if name != PLOTS["samples"]:
            assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name


def test_diverged_student_is_reported():
    """A non-finite loss stops the Trainer; the benchmark records the step (``diverged_at``)."""
    from benchmarks.schemes.training import LossHistory, open_trainer, recipe, system_recipe, train
    from odedistill.training.trainer import Hook

    class Poison(Hook):
        """Weights turn nan after step 3: the loss of step 4 is nan."""

        def after_step(self, trainer, loss):
            if trainer.step == 3:
                with torch.no_grad():
                    next(trainer.session.model.parameters()).fill_(float("nan"))

    sections, grid = system_recipe("linear", BenchSettings())
    student = {"net": "mlp", "width": 8, "depth": 1}
    raw = recipe(sections, "upwind", 10, grid, student, 8, 1e-3, 0, iterations=10)
    history = LossHistory()
    with open_trainer(raw, torch.device("cpu"), [history, Poison()]) as trainer:
        info = train(trainer, 10, history)
    assert info["diverged_at"] == 4 and math.isnan(info["final_loss"])
    assert len(history.losses) == 3


def test_cosine_schedule_of_the_distillation_students():
    """The recipe's cosine schedule: lr_k = lr (1 + cos(pi k / iterations)) / 2 at step k."""
    from benchmarks.schemes.training import LossHistory, open_trainer, recipe, system_recipe, train
    from odedistill.training.trainer import Hook

    class LearningRates(Hook):
        def __init__(self):
            self.lrs = []

        def after_step(self, trainer, loss):
            self.lrs.append(trainer.opt.param_groups[0]["lr"])

    sections, grid = system_recipe("linear", BenchSettings())
    student = {"net": "mlp", "width": 8, "depth": 1}
    iterations, lr = 8, 3e-3
    raw = recipe(sections, "upwind", 10, grid, student, 8, lr, 0, iterations, "cosine")
    history, rates = LossHistory(), LearningRates()
    with open_trainer(raw, torch.device("cpu"), [history, rates]) as trainer:
        info = train(trainer, iterations, history)
    assert info["diverged_at"] is None and len(history.losses) == iterations
    expected = [lr * 0.5 * (1 + math.cos(math.pi * k / iterations)) for k in range(iterations)]
    assert rates.lrs == pytest.approx(expected, rel=1e-12)
