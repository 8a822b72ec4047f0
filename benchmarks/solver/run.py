"""Driver of the solver benchmark: per system, distill() a student, then time it against solvers at its error.

python -m benchmarks.solver [--quick] [--systems lotka,vdp] [--train-seconds 60] [--tol 1e-2]
    [--n 10000] [--out DIR]

For each system: distill() under a CPU budget (and ``tol`` where distill() takes one); the
student's norm-relative error on n held-out states against scipy DOP853 at 1e-10; then, at
that same error, the CPU time of the student's one evaluation, torch RK4 at its fewest steps,
and scipy DOP853 / LSODA (the batch as one system, and one solve per state) at their loosest
tolerance; the break-even number of states; the a-posteriori check's cost and how well it
ranks the true per-sample errors (Spearman, recall of the worst 5 %). One process, one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import inspect
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import odedistill
from benchmarks.odesuite.systems import SUITE
from benchmarks.odesuite.training import loadavg
from benchmarks.solver.baselines import (
    fewest_rk4_steps,
    loosest_rtol,
    norm_relative,
    rk4,
    scipy_solve,
    timed,
)
from benchmarks.solver.report import write_report
from benchmarks.solver.settings import PRESETS, SolverSettings
from benchmarks.solver.systems import EXPENSIVE
from odedistill import UserError, git_commit, machine_info

DEFAULT_OUT = "benchmarks/results/solver"
#: the suite's systems and the expensive-f ones
SYSTEMS = {**SUITE, **EXPENSIVE}


def train(system, name: str, s: SolverSettings) -> tuple[Any, dict[str, Any]]:
    """distill() under the budget; the student and what its training cost."""
    params = inspect.signature(odedistill.distill).parameters
    kwargs: dict[str, Any] = {"max_seconds": s.train_seconds, "clock": "process"}
    kwargs.update(seed=s.seed, progress=False, iterations=1_000_000)
    if "tol" in params:
        kwargs["tol"] = s.tol
    if "student" in params:
        kwargs["student"] = s.student
    else:  # distill() before its accuracy contract: the suite's grid, the budget decides
        kwargs.update(N=SYSTEMS[name].N, grid=SYSTEMS[name].grid)
    with tempfile.TemporaryDirectory(prefix="bench-solver-") as tmp:
        student, cpu, wall = timed(lambda: odedistill.distill(system, run_dir=tmp, **kwargs), 1)
    validation = getattr(student, "validation", None)
    validation = validation if isinstance(validation, dict) else None
    return student.attach(system), {
        "kind": type(student).__name__,
        "evaluations": int(validation.get("evaluations", 1)) if validation else 1,
        "distill_kwargs": kwargs,
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "validation": validation,
    }


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson's of the ranks (ties broken by order)."""
    ra, rb = (v.double().argsort().argsort().double() for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def recall_of_worst(indicator: torch.Tensor, error: torch.Tensor, share: float = 0.05) -> float:
    """The share of the truly worst ``share`` of samples among the indicator's worst ``share``."""
    k = max(1, round(share * error.shape[0]))
    worst = set(torch.topk(error, k).indices.tolist())
    flagged = set(torch.topk(indicator, k).indices.tolist())
    return len(worst & flagged) / k


def measure(name: str, s: SolverSettings, log) -> dict[str, Any]:
    """Every number of one system's row."""
    system = SYSTEMS[name].build()
    g = torch.Generator().manual_seed(10_000 + s.seed)
    z = system.sample_initial(s.n, g)
    cond = system.sample_condition(s.n, g)
    c64 = None if cond is None else cond.double()
    exact = odedistill.solve_reference(system, z.double(), c64)
    row: dict[str, Any] = {"system": name, "dim": system.dim, "n": s.n, "loadavg_start": loadavg()}
    student, row["training"] = train(system, name, s)
    log(f"{name}: trained {row['training']['train_cpu_s']:.1f} CPU-s")

    K = row["training"]["evaluations"]  # a flow map's jumps
    with torch.inference_mode():
        x, cpu, wall = timed(lambda: student.sample(z, cond, steps=K), s.repeats)
    target = norm_relative(x, exact)
    per_sample = (x.double() - exact).reshape(s.n, -1).norm(dim=1)
    row["student"] = {"error": target, "cpu_s": cpu, "wall_s": wall, "evaluations": K}
    row["error_reference"] = float(exact.reshape(s.n, -1).norm(dim=1).mean())

    def check() -> tuple[torch.Tensor, torch.Tensor]:
        """What ``student.sample(z, check=True)`` computes (the sample, then its indicator),
        with the nodes each sample took."""
        student.sample(z, cond, steps=K)
        return student.residual(z, cond, steps=K, points=s.points, with_nodes=True)

    (error, used), cpu, wall = timed(check, s.repeats)
    row["check"] = {
        "points": s.points,
        "cpu_s": cpu,
        "wall_s": wall,
        "spearman": spearman(error, per_sample),
        "recall_worst_5pct": recall_of_worst(error, per_sample),
        "indicator_over_error_median": float((error / per_sample).median()),
    }
    if s.points is None and used.numel():
        row["check"]["nodes"] = {
            "mean": float(used.double().mean()),
            "share": {str(m): float((used == m).double().mean()) for m in used.unique().tolist()},
        }
    for kind in ("linear", "integral"):
        other = student.residual(z, cond, steps=K, points=s.points, kind=kind)
        row["check"][f"spearman_{kind}"] = spearman(other, per_sample)
        row["check"][f"recall_worst_5pct_{kind}"] = recall_of_worst(other, per_sample)
    row["check"]["by_points"] = {}
    for points in s.points_sweep:
        indicator, cpu, _ = timed(lambda p=points: student.residual(z, cond, K, points=p), 1)
        row["check"]["by_points"][points] = {
            "cpu_s": cpu,
            "spearman": spearman(indicator, per_sample),
            "recall_worst_5pct": recall_of_worst(indicator, per_sample),
        }

    steps = fewest_rk4_steps(system, z, cond, exact, target)
    row["rk4"] = {"steps": steps}
    if steps is not None:
        x_rk, cpu, wall = timed(lambda: rk4(system, z, cond, steps), s.repeats)
        row["rk4"].update(error=norm_relative(x_rk, exact), cpu_s=cpu, wall_s=wall)

    sub = slice(0, s.n_per_sample)
    csub = None if cond is None else cond[sub]
    for method in ("DOP853", "LSODA"):
        for vectorised in (True, False):
            key = f"{method.lower()}_{'batch' if vectorised else 'each'}"
            zz, cc, ex = (z, cond, exact) if vectorised else (z[sub], csub, exact[sub])
            rtol = loosest_rtol(system, zz, cc, ex, target, method, vectorised)
            entry: dict[str, Any] = {"rtol": rtol, "states_timed": zz.shape[0]}
            if rtol is not None:
                xs, cpu, wall = timed(
                    lambda zz=zz, cc=cc, m=method, v=vectorised, r=rtol: scipy_solve(
                        system, zz, cc, m, r, v
                    ),
                    1 if not vectorised else s.repeats,
                )
                scale = s.n / zz.shape[0]
                entry.update(error=norm_relative(xs, ex), cpu_s=cpu * scale, wall_s=wall * scale)
            row[key] = entry
    row["loadavg_end"] = loadavg()
    return row


def break_even(train_cpu_s: float, student_cpu_s: float, solver_cpu_s: float, n: int) -> float:
    """States at which training plus the student's evaluations cost what the solver does."""
    saving = (solver_cpu_s - student_cpu_s) / n
    return train_cpu_s / saving if saving > 0 else math.inf


def write(
    s: SolverSettings,
    rows: list,
    out: Path,
    command: str,
    preset: str,
    started: str,
    load_before: list[float],
) -> dict:
    """results.json and report.md of the rows so far (atomically)."""
    results = {
        "meta": {
            "command": command,
            "preset": preset,
            "started": started,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(Path(__file__).resolve().parents[2]),
            "machine": machine_info(torch.device("cpu")),
            "threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": loadavg(),
            "distill_has_tol": "tol" in inspect.signature(odedistill.distill).parameters,
            "settings": dataclasses.asdict(s),
        },
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(out / "results.json")
    write_report(results, out)
    return results


def earlier_rows(out: Path, s: SolverSettings) -> list[dict[str, Any]]:
    """The rows of other systems in ``out``'s results.json from a run with the same settings
    (so systems can be run one invocation at a time into one report)."""
    path = out / "results.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    now = json.loads(json.dumps(dataclasses.asdict(s)))  # tuples as lists, as stored
    defaults = json.loads(json.dumps(dataclasses.asdict(SolverSettings())))
    same = {**defaults, **old["meta"]["settings"]}  # a field added since: its default then
    same, now = ({k: v for k, v in d.items() if k != "systems"} for d in (same, now))
    if same != now:
        return []
    for r in old["rows"]:
        r.setdefault("command", old["meta"]["command"])
    return [r for r in old["rows"] if r["system"] not in s.systems]


def run_benchmark(s: SolverSettings, out: Path, command: str, preset: str, log=print) -> dict:
    torch.set_num_threads(1)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_before = loadavg()
    rows = earlier_rows(out, s)
    results: dict[str, Any] = {}
    for name in s.systems:
        row = measure(name, s, log)
        for key in ("rk4", "dop853_batch", "dop853_each", "lsoda_batch", "lsoda_each"):
            if "cpu_s" in row[key]:
                row[key]["speedup"] = row[key]["cpu_s"] / row["student"]["cpu_s"]
                row[key]["break_even_states"] = break_even(
                    row["training"]["train_cpu_s"], row["student"]["cpu_s"], row[key]["cpu_s"], s.n
                )
        row["command"] = command
        rows = [r for r in rows if r["system"] != name] + [row]
        results = write(s, rows, out, command, preset, started, load_before)
        log(
            f"{name}: error {row['student']['error']:.3g}, RK4 {row['rk4'].get('steps')} steps "
            f"x{row['rk4'].get('speedup', float('nan')):.2f}, DOP853 batch "
            f"x{row['dop853_batch'].get('speedup', float('nan')):.1f}, check Spearman "
            f"{row['check']['spearman']:.2f}"
        )
    return results


def parse(argv: list[str] | None) -> tuple[SolverSettings, Path, str]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.solver", description=__doc__)
    p.add_argument("--quick", action="store_true", help="the seconds-long preset a test runs")
    p.add_argument("--systems", help=f"comma list of {', '.join(SYSTEMS)}")
    p.add_argument("--train-seconds", type=float, help="distill()'s CPU budget per system")
    p.add_argument("--tol", type=float, help="distill()'s accuracy target, where it takes one")
    p.add_argument("--n", type=int, help="held-out states timed")
    p.add_argument("--student", choices=["pid", "flowmap", "auto"], help="distill(student=)")
    p.add_argument("--out", default=DEFAULT_OUT, help="report folder")
    a = p.parse_args(argv)
    preset = "quick" if a.quick else "full"
    s = PRESETS[preset]
    if a.systems:
        names = tuple(x.strip() for x in a.systems.split(",") if x.strip())
        unknown = [x for x in names if x not in SYSTEMS]
        if unknown:
            raise UserError(
                f"unknown system {unknown[0]!r}; the benchmark has {', '.join(SYSTEMS)}"
            )
        s = dataclasses.replace(s, systems=names)
    given = (("train_seconds", a.train_seconds), ("tol", a.tol), ("n", a.n), ("student", a.student))
    for field, value in given:
        if value is not None:
            s = dataclasses.replace(s, **{field: value})
    return s, Path(a.out), preset


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        s, out, preset = parse(args)
    except UserError as e:
        sys.exit(f"error: {e}")
    command = "python -m benchmarks.solver " + " ".join(shlex.quote(a) for a in args)
    t0 = time.perf_counter()
    run_benchmark(s, out, command.strip(), preset)
    print(f"wrote {out / 'report.md'} in {time.perf_counter() - t0:.0f} s")
