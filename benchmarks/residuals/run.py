"""Train flow maps with each residual family at equal CPU time, score them against the exact
flow map at 1, 2, 4 and 8 evaluations, time their iterations side by side, write the report."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from benchmarks.residuals.diagnose import error_by_start
from benchmarks.residuals.report import write_report
from benchmarks.residuals.results import merge, reusable
from benchmarks.residuals.settings import (
    NFES,
    REFERENCE,
    Family,
    Problem,
    ResidualBenchSettings,
    log_default,
)
from benchmarks.timing import interleaved_step_medians
from odedistill import (
    Session,
    Trainer,
    TrainingDiverged,
    UserError,
    build_session,
    evaluate,
    load_average,
    load_config,
    machine_info,
    reported_weights,
    weights_of,
)

DEFAULT_OUT = "benchmarks/results/residuals"


def overrides(problem: Problem, family: Family, seed: int, st: ResidualBenchSettings) -> list[str]:
    """A run's recipe overrides: the problem's, the family's, then the CPU-time budget."""
    return [
        *problem.overrides,
        *family.overrides,
        "train.iterations=1000000",
        f"train.max_seconds={st.budget}",
        "train.clock='process'",
        "train.checkpoint_every=1000000",
        "train.log_every=1000000",
        "train.sample_every=0",
        "train.ema_rates=[]",
        "eval.ema=0.0",
        f"run.seed={seed}",
        f"run.threads={st.threads}",
    ]


def session_for(problem: Problem, family: Family, seed: int, st: ResidualBenchSettings) -> Session:
    cfg = load_config(problem.recipe, overrides(problem, family, seed, st))
    return build_session(cfg, torch.device("cpu"))


def unavailable(family: Family, st: ResidualBenchSettings) -> str | None:
    """Why the recipe refuses the family's overrides (None: it runs)."""
    try:
        load_config(st.problems[0].recipe, overrides(st.problems[0], family, 0, st))
    except UserError as e:
        return str(e)
    return None


def gradient_variance(trainer: Trainer, batches: int) -> float:
    """E‖g_j − ḡ‖² / ‖ḡ‖² over independent batches j at the trained weights (no step taken)."""
    grads = []
    for _ in range(batches):
        trainer.train_step()
        grads.append(
            torch.cat(
                [p.grad.flatten() for p in trainer.session.model.parameters() if p.grad is not None]
            )
        )
    g = torch.stack(grads).double()
    mean = g.mean(0)
    return float(((g - mean) ** 2).sum(1).mean() / mean.pow(2).sum().clamp_min(1e-300))


def train_and_evaluate(
    problem: Problem, family: Family, seed: int, st: ResidualBenchSettings
) -> dict[str, Any]:
    """One flow map trained for st.budget CPU seconds, then evaluate() as a run does."""
    torch.set_num_threads(st.threads)
    session = session_for(problem, family, seed, st)
    out: dict[str, Any] = {"problem": problem.name, "family": family.name, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        trainer = Trainer(session, Path(tmp))
        c0 = time.process_time()
        try:
            trainer.run(show_progress=False)
            out["diverged_at"] = None
        except TrainingDiverged:
            out["diverged_at"] = trainer.step
        out["train_cpu_seconds"] = time.process_time() - c0
        out["iterations"] = trainer.step
        if out["diverged_at"] is not None:
            return out
        out["grad_variance"] = gradient_variance(trainer, st.grad_batches)
    report, _ = evaluate(
        session.cfg, session.system, weights_of(session), reported_weights(session)
    )
    s = report["samplers"]
    by = {1: s["student"], **{K: s[f"student@{K}"] for K in NFES if f"student@{K}" in s}}
    out["by_nfe"] = {
        str(K): {m: e[m] for m in ("trajectory_rel_error", "sliced_w1")} for K, e in by.items()
    }
    out["flow_map"] = report.get("flow_map")
    out["teacher_euler"] = {
        str(n): s[f"euler_{n}"]["trajectory_rel_error"] for n in NFES if f"euler_{n}" in s
    }
    # the teacher's explicit Euler over the whole collocation grid, as evaluate() reports it:
    # the solution an upwind-trained map converges to (PID's Theorem 1)
    floor = report["scheme_floor"]
    out["teacher_euler_grid"] = {
        "steps": floor["grid_euler_steps"],
        "rel_error": floor["grid_euler_rel_error"],
    }
    out["data_floor_sliced_w1"] = report["data_floor_sliced_w1"]
    K = max(NFES)
    if f"student@{K}" in s:
        out["error_by_start"] = error_by_start(
            session.model, session.system, s[f"student@{K}"]["times"], st.diagnose_n
        )
    return out


def step_cost(
    problem: Problem, families: list[Family], st: ResidualBenchSettings
) -> dict[str, Any]:
    """CPU seconds per iteration (step and optimiser update) of every family on one problem,
    timed in interleaved rounds in this process; ratios of the medians to the reference."""
    torch.set_num_threads(st.threads)
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        trainers = {
            f.name: Trainer(session_for(problem, f, 0, st), Path(tmp) / str(i))
            for i, f in enumerate(families)
        }
        med = interleaved_step_medians(
            trainers, st.cost_warmup, st.cost_repeats, st.cost_iters, clock=time.process_time
        )
    ref = med.get(REFERENCE, next(iter(med.values())))
    return {
        "problem": problem.name,
        "seconds_per_iteration": med,
        "ratio": {k: v / ref for k, v in med.items()},
    }


def _job(args: tuple[Any, ...]) -> dict[str, Any]:
    """One task of the pool: ('train', problem, family, seed, st) or ('cost', problem, families, st)."""
    if args[0] == "cost":
        return {"cost": step_cost(*args[1:])}
    return train_and_evaluate(*args[1:])


def run_residual_benchmark(
    quick: bool = False,
    out: str | Path = DEFAULT_OUT,
    problems: list[str] | None = None,
    families: list[str] | None = None,
    budget: float | None = None,
    jobs: int = 1,
    reuse: str | Path | None = None,
    seeds: list[int] | None = None,
    log: Callable[[str], None] = log_default,
) -> dict[str, Any]:
    """Run every part and write results.json, report.md and the plots into ``out``."""
    st = ResidualBenchSettings.quick() if quick else ResidualBenchSettings.full()
    if budget is not None:
        st.budget = budget
    if seeds:
        st.seeds = seeds
    st.problems = _pick(st.problems, problems, "problem")
    st.families = _pick(st.families, families, "family")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(st.threads)
    skipped = {f.name: why for f in st.families if (why := unavailable(f, st)) is not None}
    runnable = [f for f in st.families if f.name not in skipped]
    for name, why in skipped.items():
        log(f"{name}: not available ({why})")
    command = "python -m benchmarks.residuals" + (" --quick" if quick else "")
    if budget is not None:
        command += f" --budget {budget:g}"
    if jobs != 1:
        command += f" --jobs {jobs}"
    if seeds:
        command += " --seeds " + " ".join(map(str, seeds))
    for flag, names in (("--problems", problems), ("--families", families)):
        if names:
            command += f" {flag} " + " ".join(f'"{n}"' if " " in n else n for n in names)
    results: dict[str, Any] = {
        "meta": {
            **machine_info(torch.device("cpu"), threads=st.threads),
            "preset": st.preset,
            "seeds": st.seeds,
            "budget_cpu_seconds": st.budget,
            "jobs": jobs,
            "command": command,
            "problems": {
                p.name: {"recipe": p.recipe, "overrides": p.overrides, "about": p.about}
                for p in st.problems
            },
            "families": {
                f.name: {
                    "overrides": f.overrides,
                    "about": f.about,
                    "problems": f.problems,
                    "variant_of": f.variant_of,
                }
                for f in st.families
            },
            "unavailable": skipped,
            "loadavg_start": load_average(),
        },
        "runs": [],
        "cost": [],
    }
    t0 = time.perf_counter()
    done_before = reusable(reuse, st)
    tasks: list[tuple[Any, ...]] = []
    for p in st.problems:
        here = [f for f in runnable if f.problems is None or p.name in f.problems]
        if here:
            tasks.append(("cost", p, here, st))
        for f in here:
            for seed in st.seeds:
                if (p.name, f.name, seed) in done_before:
                    _record(results, done_before[(p.name, f.name, seed)], out, log)
                else:
                    tasks.append(("train", p, f, seed, st))
    # costs first, then seed by seed over every problem, the restricted families last: a
    # benchmark stopped early has every problem and family at fewer seeds
    tasks.sort(
        key=lambda t: (
            t[0] != "cost",
            t[0] == "train" and t[2].problems is not None,
            t[3] if t[0] == "train" else 0,
        )
    )
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            for r in pool.map(_job, tasks):
                _record(results, r, out, log)
    else:
        for task in tasks:
            _record(results, _job(task), out, log)
    results["meta"]["wall_seconds"] = time.perf_counter() - t0
    results["meta"]["loadavg_end"] = load_average()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    log(f"wrote {out / 'report.md'}")
    return results


def _record(
    results: dict[str, Any], r: dict[str, Any], out: Path, log: Callable[[str], None]
) -> None:
    if "cost" in r:
        results["cost"].append(r["cost"])
        ratios = r["cost"]["ratio"]
        log(
            f"{r['cost']['problem']}: cost per iteration "
            + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
        )
        return
    results["runs"].append(r)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    if r.get("by_nfe"):
        errs = " ".join(
            f"{r['by_nfe'][str(K)]['trajectory_rel_error']:.4g}"
            for K in NFES
            if str(K) in r["by_nfe"]
        )
        log(f"{r['problem']} {r['family']} seed {r['seed']}: {r['iterations']} it, errors {errs}")
    else:
        log(f"{r['problem']} {r['family']} seed {r['seed']}: diverged at {r['diverged_at']}")


def _pick(items: list[Any], names: list[str] | None, what: str) -> list[Any]:
    if not names:
        return items
    known = [x.name for x in items]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown {what} {unknown[0]!r} (choose from {', '.join(known)})")
    return [x for x in items if x.name in names]


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.residuals``: a bad option is one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.residuals",
        description="Lagrangian, Eulerian and semigroup flow-map residuals at equal CPU time "
        "against the exact flow map; writes report.md, results.json and plots.",
    )
    parser.add_argument("--quick", action="store_true", help="the tiny preset (seconds)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--problems", nargs="*", help="a subset of: ring digits pendulum lotka")
    parser.add_argument("--families", nargs="*", help="a subset of the families (by name)")
    parser.add_argument("--budget", type=float, help="CPU seconds of training per run")
    parser.add_argument("--seeds", type=int, nargs="*", help="seeds (default 0 1 2)")
    parser.add_argument(
        "--merge", nargs="+", metavar="RESULTS", help="write one report from these results.json"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    parser.add_argument(
        "--reuse",
        help="an earlier results.json whose finished runs (same preset and budget) are kept",
    )
    args = parser.parse_args(argv)
    try:
        if args.jobs < 1:
            raise UserError(f"--jobs {args.jobs}: give at least 1")
        if args.budget is not None and args.budget <= 0:
            raise UserError(f"--budget {args.budget}: give a positive number of CPU seconds")
        if args.merge:
            merge(args.merge, args.out)
            return
        run_residual_benchmark(
            quick=args.quick,
            out=args.out,
            problems=args.problems,
            families=args.families,
            budget=args.budget,
            jobs=args.jobs,
            reuse=args.reuse,
            seeds=args.seeds,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
