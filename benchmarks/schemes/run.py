"""Driver of the scheme benchmark: run the four parts, record the machine and command, write the report.

python -m benchmarks.schemes [--quick] [--device cpu|cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.schemes.cost import scheme_cost
from benchmarks.schemes.derivative import derivative_accuracy
from benchmarks.schemes.distillation import distillation_accuracy
from benchmarks.schemes.report import write_report
from benchmarks.schemes.settings import BenchSettings, log_default, scheme_help
from benchmarks.schemes.stability import stability
from odedistill import UserError, git_commit, load_average, machine_info, resolve_device

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = "runs/bench-schemes"


def bench_machine(device: torch.device) -> dict[str, Any]:
    """``machine_info`` plus what the report shows beside it: cores, memory, GPU, library versions."""
    import scipy

    info = machine_info(device)
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass
    try:
        sklearn_version = __import__("sklearn").__version__
    except ImportError:
        sklearn_version = None
    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(device if device.type == "cuda" else 0)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info.update(
        cpu=info["cpu_model"],
        logical_cores=info["cpu_count"],
        usable_cores=affinity,
        memory_gib=mem_gib,
        gpu=gpu,
        os=info["platform"],
        cuda=torch.version.cuda,
        numpy=np.__version__,
        scipy=scipy.__version__,
        scikit_learn=sklearn_version,
        git_commit=git_commit(ROOT),
    )
    return info


def resolve_bench_device(device: str) -> torch.device:
    """'cpu' or 'cuda' (the latter only where a GPU is visible); anything else is a UserError."""
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    return resolve_device(device)


def default_command(quick: bool, device: str, out: str | Path) -> str:
    """The command line that reproduces a run."""
    args = (["--quick"] if quick else []) + ["--device", device, "--out", str(out)]
    return shlex.join(["python", "-m", "benchmarks.schemes", *args])


def run_scheme_benchmark(
    quick: bool = False,
    device: str = "cpu",
    out: str | Path = DEFAULT_OUT,
    command: str | None = None,
    settings: BenchSettings | None = None,
    log: Callable[[str], None] = log_default,
) -> dict[str, Any]:
    """Run the four parts and write report.md, results.json and the plots into ``out``.

    Args:
        quick: the small preset (a few minutes on two CPU cores) instead of the full one.
        device: 'cpu' or 'cuda'.
        out: the output folder (created; files in it are overwritten).
        command: the command line recorded in the report (built from the arguments if None).
        settings: explicit settings instead of the preset (tests use smaller ones).
        log: where progress lines go (stderr by default).

    Returns:
        The results, as written to results.json.
    """
    dev = resolve_bench_device(device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or (BenchSettings.quick() if quick else BenchSettings.full())
    threads_before = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(settings.threads)
    load_before = load_average() or None
    started = _dt.datetime.now(_dt.timezone.utc)
    t_all = time.perf_counter()
    parts: dict[str, float] = {}
    try:
        log(f"scheme benchmark ({settings.preset}) on {dev}, writing to {out}")

        t = time.perf_counter()
        log("1/4 derivative accuracy on closed-form trajectories")
        derivative = derivative_accuracy(settings)
        parts["derivative"] = time.perf_counter() - t

        t = time.perf_counter()
        log("2/4 distillation accuracy against N")
        distill = distillation_accuracy(settings, dev, log)
        parts["distillation"] = time.perf_counter() - t

        t = time.perf_counter()
        log("3/4 cost per iteration")
        cost = scheme_cost(settings, dev, log)
        parts["cost"] = time.perf_counter() - t

        t = time.perf_counter()
        log("4/4 stability on 8x8 digit images")
        stab, pictures = stability(settings, dev, log)
        parts["stability"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads_before)
    wall = time.perf_counter() - t_all
    results = {
        "meta": {
            "benchmark": "residual schemes (issue 6)",
            "preset": settings.preset,
            "command": command or default_command(quick, device, out),
            "date": started.isoformat(timespec="seconds"),
            "wall_seconds": wall,
            "part_seconds": parts,
            "device": str(dev),
            "torch_threads": settings.threads if dev.type == "cpu" else threads_before,
            "load_average_before": load_before,
            "load_average_after": load_average() or None,
            "machine": bench_machine(dev),
            "schemes": scheme_help(),
            "settings": dataclasses.asdict(settings),
        },
        "derivative": derivative,
        "distillation": distill,
        "cost": cost,
        "stability": stab,
    }
    write_report(results, out, pictures)
    log(f"done in {wall:.0f} s: {out / 'report.md'}")
    return results


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.schemes``: a bad option is one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.schemes",
        description="Benchmark the residual schemes: derivative order, distillation accuracy, "
        "cost and stability; writes report.md, results.json and plots.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the small preset (a few minutes on two CPU cores)"
    )
    parser.add_argument("--device", default="cpu", help="'cpu' (default) or 'cuda'")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        run_scheme_benchmark(quick=args.quick, device=args.device, out=args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
