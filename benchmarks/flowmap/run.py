"""Train flow-map and PID students with every scheme on every system, evaluate them against
the exact solution at 1, 2, 4 and 8 evaluations, time their steps side by side, write the report."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.flowmap.report import write_report
from benchmarks.flowmap.settings import NFES, FlowMapBenchSettings, SystemSetting, log_default
from benchmarks.timing import interleaved_step_medians
from odedistill import (
    Session,
    Trainer,
    UserError,
    build_session,
    evaluate,
    load_average,
    load_config,
    machine_info,
    reported_weights,
    weights_of,
)

DEFAULT_OUT = "benchmarks/results/flowmap"
STUDENTS = ("flowmap", "pid")


def overrides(setting: SystemSetting, kind: str, scheme: str, seed: int, threads: int) -> list[str]:
    """The recipe overrides of one student: its kind, scheme and budget on top of the system's."""
    n = setting.iterations
    return [
        *setting.overrides,
        f"student.kind='{kind}'",
        f"scheme.kind='{scheme}'",
        f"train.iterations={n}",
        f"train.checkpoint_every={n}",
        f"train.log_every={max(1, n // 10)}",
        "train.sample_every=0",
        f"run.seed={seed}",
        f"run.threads={threads}",
    ]


def session_for(
    setting: SystemSetting, kind: str, scheme: str, st: FlowMapBenchSettings
) -> Session:
    cfg = load_config(setting.recipe, overrides(setting, kind, scheme, st.seed, st.threads))
    return build_session(cfg, torch.device("cpu"))


def train_and_evaluate(
    setting: SystemSetting, kind: str, scheme: str, st: FlowMapBenchSettings
) -> dict[str, Any]:
    """One student: trained through the project's Trainer, then evaluate() as a run does."""
    session = session_for(setting, kind, scheme, st)
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        t0 = time.perf_counter()
        Trainer(session, Path(tmp)).run(show_progress=False)
        seconds = time.perf_counter() - t0
    report, _ = evaluate(
        session.cfg, session.system, weights_of(session), reported_weights(session)
    )
    s = report["samplers"]
    if kind == "flowmap":
        errors = {K: s[f"student@{K}"] for K in NFES if f"student@{K}" in s}
    else:
        errors = {1: s["student"]}
    return {
        "system": setting.name,
        "student": kind,
        "scheme": scheme,
        "iterations": setting.iterations,
        "train_seconds": seconds,
        "by_nfe": {
            str(K): {m: e[m] for m in ("trajectory_rel_error", "sliced_w1")}
            for K, e in errors.items()
        },
        "flow_map": report.get("flow_map"),
        "teacher": {
            solver: {
                str(n): {m: s[f"{solver}_{n}"][m] for m in ("trajectory_rel_error", "sliced_w1")}
                for n in NFES
                if f"{solver}_{n}" in s
            }
            for solver in ("euler", "heun")
        },
        "data_floor_sliced_w1": report["data_floor_sliced_w1"],
    }


def step_cost(setting: SystemSetting, scheme: str, st: FlowMapBenchSettings) -> dict[str, Any]:
    """Seconds per training iteration (step and optimiser update) of the PID and the flow-map
    student on the same settings, timed in interleaved rounds; the ratio of the medians."""
    trainers = {}
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        for kind in STUDENTS:
            trainers[kind] = Trainer(session_for(setting, kind, scheme, st), Path(tmp) / kind)
        med = interleaved_step_medians(trainers, st.cost_warmup, st.cost_repeats, st.cost_iters)
    return {
        "system": setting.name,
        "scheme": scheme,
        "seconds_per_iteration": med,
        "ratio": med["flowmap"] / med["pid"],
    }


def run_flowmap_benchmark(
    quick: bool = False,
    out: str | Path = DEFAULT_OUT,
    systems: list[str] | None = None,
    log: Callable[[str], None] = log_default,
) -> dict[str, Any]:
    """Run every part and write results.json, report.md and the plots into ``out``."""
    st = FlowMapBenchSettings.quick() if quick else FlowMapBenchSettings.full()
    if systems:
        known = [s.name for s in st.systems]
        unknown = [n for n in systems if n not in known]
        if unknown:
            raise UserError(f"unknown system {unknown[0]!r} (choose from {', '.join(known)})")
        st.systems = [s for s in st.systems if s.name in systems]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(st.threads)
    results: dict[str, Any] = {
        "meta": {
            **machine_info(torch.device("cpu"), threads=st.threads),
            "preset": st.preset,
            "seed": st.seed,
            "command": "python -m benchmarks.flowmap" + (" --quick" if quick else ""),
            "systems": {
                s.name: {
                    "recipe": s.recipe,
                    "overrides": s.overrides,
                    "iterations": s.iterations,
                    "about": s.about,
                }
                for s in st.systems
            },
            "loadavg_start": load_average(),
        },
        "students": [],
        "cost": [],
    }
    for setting in st.systems:
        for scheme in st.schemes:
            results["cost"].append(step_cost(setting, scheme, st))
            c = results["cost"][-1]
            log(f"{setting.name} {scheme}: flow map / PID cost per iteration {c['ratio']:.2f}")
            for kind in STUDENTS:
                r = train_and_evaluate(setting, kind, scheme, st)
                results["students"].append(r)
                best = r["by_nfe"][str(max(int(k) for k in r["by_nfe"]))]
                log(
                    f"{setting.name} {kind} {scheme}: {r['train_seconds']:.0f} s, error at "
                    f"{max(int(k) for k in r['by_nfe'])} NFE {best['trajectory_rel_error']:.4g}"
                )
    results["meta"]["loadavg_end"] = load_average()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    log(f"wrote {out / 'report.md'}")
    return results


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.flowmap``: a bad option is one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flowmap",
        description="Flow-map and PID students against the teacher's Euler and Heun, error "
        "against NFE, with every residual scheme; writes report.md, results.json and plots.",
    )
    parser.add_argument("--quick", action="store_true", help="the tiny preset (seconds)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--systems", nargs="*", help="a subset of: ring digits pendulum")
    args = parser.parse_args(argv)
    try:
        run_flowmap_benchmark(quick=args.quick, out=args.out, systems=args.systems)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
