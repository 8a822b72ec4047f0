"""One distillation of one suite system under a tolerance and a time budget, scored against scipy (and Euler(N - 1))."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import torch

import odedistill
from benchmarks.odesuite.settings import SuiteSettings, Variant
from benchmarks.odesuite.systems import SUITE
from odedistill import load_average, relative_error, sample_errors, trajectory_errors


def loadavg() -> list[float]:
    """The load averages rounded to 2 decimals, as the suite's tables record them."""
    return [round(x, 2) for x in load_average()]


@cache
def test_set(name: str, n: int, seed: int) -> dict[str, Any]:
    """Held-out states and conditions, scipy endpoints (DOP853, 1e-10) and Euler(N - 1)'s error."""
    spec = SUITE[name]
    system = spec.build()
    g = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, g, dtype=torch.float64)
    c = system.sample_condition(n, g)
    c = None if c is None else c.double()
    exact = odedistill.solve_reference(system, z, c)
    grid = odedistill.make_grid(spec.grid, spec.N, system.t_start, system.t_end).double()
    euler = odedistill.euler(system, z, grid, c)
    return {
        "z": z,
        "cond": c,
        "exact": exact,
        "euler_error": relative_error(euler, exact),
        "euler_norm_error": trajectory_errors(euler, exact)["error"],
    }


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def distill_system(
    name: str, variant: Variant, budget: float, seed: int, s: SuiteSettings
) -> dict[str, Any]:
    """distill() the suite system ``name`` for ``budget`` process CPU seconds of training steps
    with ``variant``'s options; the row of the report."""
    spec = SUITE[name]
    system = spec.build()
    kwargs: dict[str, Any] = dict(
        tol=s.tol,
        student=s.student,
        iterations=s.max_iterations,
        max_seconds=budget,
        clock="process",
        validate_every=s.validate_every,
        seed=seed,
        progress=False,
    )
    kwargs.update(variant.kwargs)
    if variant.old_net:
        torch.manual_seed(seed)
        kwargs["net"] = odedistill.MLP(system.state_shape, 128, 3)
    test = test_set(name, s.test_n, s.test_seed)
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="odesuite-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", odedistill.AccuracyWarning)  # the table says it
        cpu0, wall0 = time.process_time(), time.perf_counter()
        student = odedistill.distill(system, run_dir=tmp, **kwargs)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        lines = _metrics(Path(tmp))
    v = student.validation
    with torch.no_grad():
        c = None if test["cond"] is None else test["cond"].float()
        x = student.sample(test["z"].float(), c, steps=v["evaluations"]).double()
    e = trajectory_errors(x, test["exact"])
    mean_rel = relative_error(x, test["exact"])
    big: dict[str, Any] = {}
    if s.big_n:
        b = test_set(name, s.big_n, s.big_seed)
        with torch.no_grad():
            c = None if b["cond"] is None else b["cond"].float()
            xb = student.sample(b["z"].float(), c, steps=v["evaluations"]).double()
        per = sample_errors(xb, b["exact"])
        big = {"error_big": float(per.mean()), "p99_big": float(per.quantile(0.99))}
        if s.big_n >= 2 * s.test_n:  # what a test set of test_n states can read instead
            k = s.big_n // s.test_n
            means = per[: k * s.test_n].reshape(k, s.test_n).mean(dim=1)
            big["big_chunk_means"] = [float(means.min()), float(means.max())]
    curve = [
        {
            "step": r["step"],
            "val_error": r["val_error"],
            "val_ratio": r["val_ratio"],
            "train_seconds": r.get("train_seconds"),
        }
        for r in lines
        if "val_ratio" in r
    ]
    return {
        "system": name,
        "seed": seed,
        "budget_cpu_s": budget,
        "tol": s.tol,
        "N": spec.N,
        "grid": spec.grid,
        "student": "flowmap" if v["evaluations"] > 1 else "pid",
        "evaluations": v["evaluations"],
        "steps": v["steps"],
        "train_cpu_s": v["seconds"],
        "process_cpu_s": cpu,
        "wall_s": wall,
        "ms_per_step_cpu": 1000 * v["seconds"] / v["steps"] if v["steps"] else None,
        "error": e["error"],
        "median": e["median"],
        "p95": e["p95"],
        "val_error": v["error"],
        "val_p95": v["p95"],
        "val_n": v.get("n"),
        **big,
        "met": v["met"],
        "test_met": e["error"] <= s.tol,
        "mean_rel_error": mean_rel,
        "euler_error": test["euler_error"],
        "ratio": mean_rel / test["euler_error"],
        "val_curve": curve,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
    }


def early_stop(curve: list[dict[str, Any]], target: float, consecutive: int = 2) -> dict | None:
    """Where ``train.stop_at_ratio = target`` would have stopped this run: the check that
    completes ``consecutive`` readings at or below the target (the checks do not change
    training, so the curve of a full run shows it)."""
    streak = 0
    for r in curve:
        streak = streak + 1 if r["val_ratio"] <= target else 0
        if streak >= consecutive:
            return r
    return None
