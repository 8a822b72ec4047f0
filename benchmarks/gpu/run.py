"""Driver of the GPU check: each part in its own process under a wall-time cap; the report after each.

    python -m benchmarks.gpu [--official PATH] [--out DIR] [--parts official,compile,...]
    python -m benchmarks.gpu --dry-run [--official PATH]     # CPU, toy sizes, every step

A part that fails or overruns its cap is recorded (its last error line, or what it measured
before the cap) and the next part runs. ``<out>/<device>.json`` and ``.md`` are rewritten
after every part, so a run stopped from outside still leaves the parts done so far.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu.settings import PARTS, Settings, preset

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = {False: ROOT / "benchmarks" / "results" / "gpu", True: ROOT / "runs" / "bench-gpu"}
#: seconds a part gets beyond its own deadline to return before it is killed
GRACE = 0.1


def run_part(
    name: str, settings: Settings, a: argparse.Namespace, out: Path, budget: float
) -> None:
    """The body of one part, in this process; its numbers go to ``out`` as it measures them."""
    import torch

    from benchmarks.gpu.measure import Deadline, PartLog

    torch.manual_seed(0)
    if settings.device == "cpu":
        torch.set_num_threads(1)
    log = PartLog(out)
    dl = Deadline(budget * 0.85)  # leave the rest of the cap for the part's own exit
    work = Path(a.work)
    if name == "official":
        from benchmarks.gpu.throughput import part_official

        part_official(settings, a.official, log, dl)
    elif name == "compile":
        from benchmarks.gpu.throughput import part_compile

        part_compile(settings, log, dl)
    elif name == "schemes":
        from benchmarks.gpu.schemes import part_schemes

        part_schemes(settings, log, dl)
    elif name == "torchrun":
        from benchmarks.gpu.resume import part_torchrun

        part_torchrun(settings, work, log, dl)
    elif name == "fid":
        from benchmarks.gpu.fidspeed import part_fid

        part_fid(settings, work, log, dl)
    log.put("finished", True)


def spawn(name: str, a: argparse.Namespace, work: Path, budget: float) -> dict[str, Any]:
    """Run one part as ``python -m benchmarks.gpu --part NAME`` under a ``budget``-second cap."""
    res_path, log_path = work / f"part_{name}.json", work / f"part_{name}.log"
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--part", name, "--part-out", str(res_path)]
    cmd += ["--work", str(work), "--budget", f"{budget:.1f}", "--device", a.device]
    cmd += ["--dry-run"] if a.dry_run else []
    cmd += ["--official", str(a.official)] if a.official else []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    t0, c0 = time.perf_counter(), _cpu_seconds()
    status: dict[str, Any] = {}
    with log_path.open("w") as logf:
        p = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )
        try:
            p.wait(timeout=budget * (1 + GRACE))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            status["status"] = f"stopped at its cap of {budget * (1 + GRACE):.0f} s"
    try:
        os.killpg(p.pid, signal.SIGKILL)  # children it left behind (torchrun workers)
    except ProcessLookupError:
        pass
    status["wall_s"] = time.perf_counter() - t0
    status["cpu_s"] = _cpu_seconds() - c0
    status["returncode"] = p.returncode
    try:
        data = json.loads(res_path.read_text())
    except (OSError, json.JSONDecodeError):
        data = {}
    lines = log_path.read_text(errors="replace").strip().splitlines() or ["?"]
    if "status" not in status:
        if p.returncode == 0 and data.get("finished"):
            status["status"] = "ok"
        else:
            status["status"] = f"failed: {lines[-1][:300]}"
    if status["status"] != "ok":  # the JSON is all that may come back from a device
        status["log_tail"] = [ln[:300] for ln in lines[-40:]]
    print(f"[{name}] {status['status']} ({status['wall_s']:.0f} s)", file=sys.stderr)
    return {**status, "results": data}


def in_process(
    name: str, settings: Settings, a: argparse.Namespace, work: Path, budget: float
) -> dict[str, Any]:
    """Run one part in this process (the dry run's test: no interpreter start-up per part)."""
    res_path = work / f"part_{name}.json"
    t0, c0 = time.perf_counter(), _cpu_seconds()
    status: dict[str, Any] = {"status": "ok", "in_process": True}
    try:
        run_part(name, settings, a, res_path, budget)
    except Exception as e:  # recorded; the next part runs
        text = str(e).strip().splitlines()
        status["status"] = f"failed: {type(e).__name__}: {text[0][:300] if text else ''}"
    status["wall_s"] = time.perf_counter() - t0
    status["cpu_s"] = _cpu_seconds() - c0
    try:
        data = json.loads(res_path.read_text())
    except (OSError, json.JSONDecodeError):
        data = {}
    print(f"[{name}] {status['status']} ({status['wall_s']:.0f} s)", file=sys.stderr)
    return {**status, "results": data}


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    import resource

    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0]
    )
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: every step in seconds")
    p.add_argument("--official", type=Path, help="a clone of pantheon5100/pid_diffusion")
    p.add_argument("--out", type=Path, help="folder for <device>.md and .json")
    p.add_argument("--device", help="cuda (default) or cpu (the dry run's default)")
    p.add_argument("--parts", help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the parts in this process (no wall-time caps; for the dry run's test)",
    )
    p.add_argument("--keep-work", action="store_true", help="keep the runs and files made")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    settings = preset(a.dry_run)
    a.device = a.device or settings.device
    settings = settings.with_device(a.device)
    if a.part:
        run_part(a.part, settings, a, a.part_out, a.budget)
        return
    parts = a.parts.split(",") if a.parts else list(PARTS)
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    if a.official is not None and not (a.official / "cm").is_dir():
        print(
            f"[official] no official code at {a.official}: that comparison is skipped",
            file=sys.stderr,
        )
    import torch

    from benchmarks.gpu.measure import device_slug, machine
    from benchmarks.gpu.report import write

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "error: --device cuda but no CUDA GPU is visible; use --dry-run for the CPU check",
            file=sys.stderr,
        )
        sys.exit(2)
    t0 = time.perf_counter()
    info = machine(torch.device(a.device))
    out_dir = a.out or DEFAULT_OUT[a.dry_run]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / device_slug(info)
    command = "python -m benchmarks.gpu " + shlex.join(argv if argv is not None else sys.argv[1:])
    record: dict[str, Any] = {
        "command": command.strip(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {k: v for k, v in settings.__dict__.items()},
        "official_path": str(a.official) if a.official else None,
        "parts": {},
    }
    work = Path(tempfile.mkdtemp(prefix="odedistill-gpu-check-"))
    record["work_dir"] = a.work = str(work)
    for name in parts:
        left = settings.total_seconds - (time.perf_counter() - t0) - 5
        budget = min(settings.budgets[name], left / (1 + GRACE))
        if budget < 10:
            record["parts"][name] = {"status": f"skipped: {left:.0f} s of the total cap left"}
        else:
            go = (
                in_process(name, settings, a, work, budget)
                if a.in_process
                else spawn(name, a, work, budget)
            )
            record["parts"][name] = {"budget_s": budget, **go}
        record["wall_s"] = time.perf_counter() - t0
        write(stem, record)
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)
        record.pop("work_dir")
        write(stem, record)
    print(f"wrote {stem}.md and {stem}.json ({record['wall_s']:.0f} s)", file=sys.stderr)
