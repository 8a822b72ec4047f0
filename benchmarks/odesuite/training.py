"""One distillation of one suite system under a time budget, scored against scipy and Euler(N - 1)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch

import odedistill
from benchmarks.odesuite.settings import SuiteSettings, Variant
from benchmarks.odesuite.systems import SUITE
from odedistill.api.distill import auto_scheme
from odedistill.evaluation.metrics import relative_error


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


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
    return {"z": z, "cond": c, "exact": exact, "euler_error": relative_error(euler, exact)}


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
        N=spec.N,
        grid=spec.grid,
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
    with tempfile.TemporaryDirectory(prefix="odesuite-") as tmp:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        student = odedistill.distill(system, run_dir=tmp, **kwargs)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        lines = _metrics(Path(tmp))
    with torch.no_grad():
        c = None if test["cond"] is None else test["cond"].float()
        x = student.sample(test["z"].float(), c).double()
    error = relative_error(x, test["exact"])
    stop = next((r for r in reversed(lines) if "stopped" in r), None)
    steps = max((r["step"] for r in lines), default=0)
    curve = [
        {"step": r["step"], "val_ratio": r["val_ratio"], "train_seconds": r.get("train_seconds")}
        for r in lines
        if "val_ratio" in r
    ]
    scheme = kwargs.get("scheme", "auto")
    return {
        "system": name,
        "seed": seed,
        "budget_cpu_s": budget,
        "N": spec.N,
        "grid": spec.grid,
        "scheme": auto_scheme(spec.N) if scheme == "auto" else scheme,
        "steps": steps,
        "train_cpu_s": stop["train_seconds"] if stop else None,
        "process_cpu_s": cpu,
        "wall_s": wall,
        "ms_per_step_cpu": 1000 * stop["train_seconds"] / steps if stop and steps else None,
        "error": error,
        "euler_error": test["euler_error"],
        "ratio": error / test["euler_error"],
        "meets_target": error / test["euler_error"] <= s.target,
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
