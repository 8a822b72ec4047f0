"""Start-up cost of the command line: ``odedistill --version`` and ``--help`` beside ``python -c pass``.

Each command runs in a fresh interpreter, ``--repeats`` times, the commands interleaved so that
a change of machine load hits them alike; the table gives the median wall time and the median
process CPU time (user + system, read from ``getrusage`` of the finished child) and the ratio of
each to ``python -c pass``. ``import odedistill; odedistill.distill`` is the price of the whole
library (torch, scipy, matplotlib), which the command line pays only for the commands that need it.

    python -m benchmarks.startup [--repeats 7] [--quick] [--out benchmarks/results/startup]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (label, python arguments); the first is the reference of every ratio
COMMANDS = [
    ("python -c pass", ["-c", "pass"]),
    ("odedistill --version", ["-m", "odedistill", "--version"]),
    ("odedistill --help", ["-m", "odedistill", "--help"]),
    ("import odedistill", ["-c", "import odedistill"]),
    ("import odedistill; odedistill.distill", ["-c", "import odedistill; odedistill.distill"]),
]
QUICK_COMMANDS = 3  # --quick: the reference, --version and --help, once each


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``python ARGS`` in a fresh interpreter run from ROOT."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def measure(repeats: int, quick: bool = False) -> dict:
    commands = COMMANDS[:QUICK_COMMANDS] if quick else COMMANDS
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in commands}
    load_before = os.getloadavg()
    for _ in range(repeats):
        for label, args in commands:
            samples[label].append(time_command(args))
    rows = []
    for label, _ in commands:
        wall = statistics.median(w for w, _ in samples[label])
        cpu = statistics.median(c for _, c in samples[label])
        rows.append({"command": label, "wall_s": wall, "cpu_s": cpu})
    ref = rows[0]
    for row in rows:
        row["wall_ratio"] = row["wall_s"] / ref["wall_s"]
        row["cpu_ratio"] = row["cpu_s"] / max(ref["cpu_s"], 1e-9)
    return {
        "rows": rows,
        "repeats": repeats,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "command": "python -m benchmarks.startup " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def report(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Start-up time of the command line",
        "",
        f"`{result['command']}` on {m['processor']}, {m['cpus']} CPUs, Python {m['python']}, "
        f"{result['date']}; load average {m['load_average_before'][0]:.2f} before, "
        f"{m['load_average_after'][0]:.2f} after; median of {result['repeats']} fresh "
        "interpreters per command, interleaved.",
        "",
        "| command | wall s | CPU s | wall / python -c pass | CPU / python -c pass |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| `{r['command']}` | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | "
            f"{r['wall_ratio']:.1f} | {r['cpu_ratio']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="fresh interpreters per command")
    parser.add_argument("--quick", action="store_true", help="3 commands, once each")
    parser.add_argument("--out", type=Path, default=None, help="write report.md, results.json")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    result = measure(1 if args.quick else args.repeats, quick=args.quick)
    text = report(result)
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(text)
        (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
