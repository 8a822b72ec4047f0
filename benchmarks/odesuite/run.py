"""Driver of the odesuite benchmark: the final table at distill()'s defaults and the ablation.

python -m benchmarks.odesuite [--quick] [--tol 1e-2] [--budget 60] [--systems vdp,sir] [--parts final,ablation]
    [--seeds 0,1] [--ablation-budget 20] [--variants defaults,no_causal] [--out DIR]

A part run into a folder that holds results.json from another invocation is merged into it
(run the final table and the ablation separately, the report shows both).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import inspect
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import odedistill
from benchmarks.odesuite.report import write_report
from benchmarks.odesuite.settings import VARIANTS, SuiteSettings, log_default
from benchmarks.odesuite.systems import SUITE
from benchmarks.odesuite.training import distill_system, loadavg, test_set
from odedistill import UserError, git_commit, machine_info

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = "runs/bench-odesuite"


def distill_defaults() -> dict[str, Any]:
    """distill()'s keyword defaults at the time of a run (what the 'defaults' variant means)."""
    params = inspect.signature(odedistill.distill).parameters.values()
    simple = (bool, int, float, str, type(None))
    return {p.name: p.default for p in params if isinstance(p.default, simple) and p.name != "net"}


def _part(
    name: str, s: SuiteSettings, runs: list[tuple[str, str, int, float]], log: Callable[[str], None]
) -> dict[str, Any]:
    """Run (variant, system, seed, budget) one after another; the part's record."""
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_before, t0 = loadavg(), time.perf_counter()
    rows = []
    for k, (variant, system, seed, budget) in enumerate(runs):
        row = distill_system(system, VARIANTS[variant], budget, seed, s)
        row["variant"] = variant
        rows.append(row)
        log(
            f"[{name} {k + 1}/{len(runs)}] {variant:>12s} {system:>11s} seed {seed}: "
            f"{row['steps']} steps, {row['evaluations']} ev., error {row['error']:.3g} (val "
            f"{row['val_error']:.3g}, met {row['met']}), ratio {row['ratio']:.2f}, train CPU "
            f"{row['train_cpu_s']:.0f} s, wall {row['wall_s']:.0f} s, load {row['loadavg_end']}"
        )
    return {
        "rows": rows,
        "distill_defaults": distill_defaults(),
        "date": started,
        "wall_seconds": time.perf_counter() - t0,
        "load_average_before": load_before,
        "load_average_after": loadavg(),
    }


def _merge(old: dict[str, Any] | None, new: dict[str, Any], key: tuple[str, ...]) -> dict[str, Any]:
    """``new``'s part with the rows of ``old`` that it does not redo (same ``key`` fields) kept,
    when both ran under the same budget: parts can be run and rerun piecewise."""
    if not old or old.get("budget") != new.get("budget"):
        return new
    redone = {tuple(r[k] for k in key) for r in new["rows"]}
    kept = [r for r in old["rows"] if tuple(r[k] for k in key) not in redone]
    merged = {**new, "rows": kept + new["rows"]}
    for field in ("variants", "systems", "seeds"):
        if field in new and field in old:
            merged[field] = list(dict.fromkeys([*old[field], *new[field]]))
    if old.get("command") != new.get("command"):
        merged["command"] = f"{old['command']}; {new['command']}"
    return merged


def run_suite(
    settings: SuiteSettings,
    out: str | Path = DEFAULT_OUT,
    command: str | None = None,
    log: Callable[[str], None] = log_default,
) -> dict[str, Any]:
    """Run the parts of ``settings`` and write results.json and report.md into ``out``."""
    s = settings
    unknown = [n for n in s.systems if n not in SUITE]
    if unknown:
        raise UserError(f"unknown system {unknown[0]!r}; the suite has {', '.join(SUITE)}")
    bad = [v for v in s.variants if v not in VARIANTS]
    if bad:
        raise UserError(f"unknown variant {bad[0]!r}; known: {', '.join(VARIANTS)}")
    if any(p not in ("final", "ablation") for p in s.parts):
        raise UserError("--parts takes 'final' and/or 'ablation'")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "results.json"
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    t_all = time.perf_counter()
    load_before = loadavg()
    command = command or shlex.join(["python", "-m", "benchmarks.odesuite", *sys.argv[1:]])
    try:
        euler = results.setdefault("euler_errors", {})
        for name in s.systems:
            euler[name] = test_set(name, s.test_n, s.test_seed)["euler_error"]
        if "final" in s.parts:
            runs = [("defaults", n, seed, s.budget) for seed in s.seeds for n in s.systems]
            part = _part("final", s, runs, log)
            final = {
                **part,
                "command": command,
                "budget": s.budget,
                "tol": s.tol,
                "student": s.student,
                "seeds": s.seeds,
                "test_n": s.test_n,
                "big_n": s.big_n,
                "big_seed": s.big_seed,
                "validate_every": s.validate_every,
            }
            results["final"] = _merge(results.get("final"), final, ("system", "seed"))
        if "ablation" in s.parts:
            runs = []
            for v in s.variants:
                for n in s.systems:
                    runs.append((v, n, s.ablation_seed, s.ablation_budget))
            old = results.get("ablation") or {}
            have = {
                r["system"]
                for r in old.get("rows", [])
                if r["variant"] == "defaults" and old.get("budget") == s.ablation_budget
            }
            if "defaults" not in s.variants:  # the reference rows, unless they exist already
                missing = [n for n in s.systems if n not in have]
                runs = [("defaults", n, s.ablation_seed, s.ablation_budget) for n in missing] + runs
            part = _part("ablation", s, runs, log)
            ablation = {
                **part,
                "command": command,
                "budget": s.ablation_budget,
                "seed": s.ablation_seed,
                "systems": s.systems,
                "variants": ["defaults", *[v for v in s.variants if v != "defaults"]],
            }
            if have and not any(r[0] == "defaults" for r in runs):
                ablation["distill_defaults"] = old.get("distill_defaults")  # of the reference
            results["ablation"] = _merge(old, ablation, ("variant", "system", "seed"))
    finally:
        torch.set_num_threads(threads)
    machine = machine_info(torch.device("cpu"))
    machine["git_commit"] = git_commit(ROOT)
    results["meta"] = {
        "benchmark": "odesuite (issues 13, 18)",
        "preset": s.preset,
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - t_all,
        "torch_threads": s.threads,
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "machine": machine,
        "settings": dataclasses.asdict(s),
    }
    previous.write_text(json.dumps(results, indent=1))
    write_report(results, out)
    log(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return results


def _list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.odesuite``: a bad option is one line on stderr and exit status 2."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.odesuite",
        description="distill(system, tol) on ten ODEs under a CPU-time budget: the final table "
        "at the defaults and an ablation of the options; writes report.md and results.json.",
    )
    p.add_argument("--quick", action="store_true", help="the tiny preset (seconds; for tests)")
    p.add_argument("--budget", type=float, help="CPU seconds per system, final table (60)")
    p.add_argument("--tol", type=float, help="the tolerance asked of every system (1e-2)")
    p.add_argument("--student", help="distill()'s student: 'auto' (default), 'pid' or 'flowmap'")
    p.add_argument("--ablation-budget", type=float, help="CPU seconds per ablation run (20)")
    p.add_argument("--systems", help=f"comma list (default all: {','.join(SUITE)})")
    p.add_argument("--parts", help="comma list of final, ablation (default final,ablation)")
    p.add_argument("--seeds", help="comma list of seeds of the final table (default 0)")
    p.add_argument("--variants", help=f"comma list (default all: {','.join(VARIANTS)})")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    a = p.parse_args(argv)
    s = SuiteSettings.quick() if a.quick else SuiteSettings.full()
    try:
        if a.budget is not None:
            s.budget = a.budget
        if a.tol is not None:
            s.tol = a.tol
        if a.student:
            if a.student not in ("auto", "pid", "flowmap"):
                raise UserError(f"--student takes auto, pid or flowmap, got {a.student!r}")
            s.student = a.student
        if a.ablation_budget is not None:
            s.ablation_budget = a.ablation_budget
        if a.systems:
            s.systems = _list(a.systems)
        if a.parts:
            s.parts = _list(a.parts)
        if a.variants:
            s.variants = _list(a.variants)
        if a.seeds:
            try:
                s.seeds = [int(x) for x in _list(a.seeds)]
            except ValueError:
                raise UserError(f"--seeds takes integers, got {a.seeds!r}") from None
        if s.budget <= 0 or s.ablation_budget <= 0:
            raise UserError("budgets must be positive")
        command = shlex.join(["python", "-m", "benchmarks.odesuite", *(argv or sys.argv[1:])])
        run_suite(s, a.out, command)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
