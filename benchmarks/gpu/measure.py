"""Timing on a GPU as METHOD.md asks: warm-up first, CUDA events around each step, the median.

Also: peak memory of one configuration among several resident ones, the machine's identity
(device, driver, torch, CUDA, cuDNN) and a part's results file, rewritten after every number so
that a part killed at its wall-time cap still leaves what it measured.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call: CUDA events around it on a GPU (after a synchronisation), else the
    host clock. The call's own host syncs (``float(loss)``, ``.item()``) are part of its time."""
    if device.type == "cuda":
        sync(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def spread(xs: list[float]) -> float:
    """(max - min) / median of repeated timings: how far apart two numbers must be to differ."""
    return (max(xs) - min(xs)) / median(xs) if xs else float("nan")


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of an optimiser's state tensors (Adam's moments, ...)."""
    return tensor_bytes(v for st in opt.state.values() for v in st.values() if torch.is_tensor(v))


class PeakMemory:
    """Peak CUDA memory of one configuration's steps while others stay resident.

    ``transient`` is ``max_memory_allocated`` during the configuration's steps minus what was
    allocated when they began (activations, gradients, workspaces); adding the configuration's
    own resident bytes (weights, EMAs, optimiser state) gives the peak it would have alone.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.transient = 0
        self.base = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self.base
            self.transient = max(self.transient, peak)


def gib(n: float | None) -> float | None:
    return None if n is None else n / 2**30


def _run(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def machine(device: torch.device) -> dict[str, Any]:
    """Device name, driver, torch / CUDA / cuDNN versions, host CPU and cores, load average."""
    from odedistill import git_commit, machine_info

    info: dict[str, Any] = {
        "device": str(device),
        "device_name": "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": machine_info(torch.device("cpu"))["cpu_model"],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            device_name=p.name,
            capability=f"{p.major}.{p.minor}",
            multiprocessors=p.multi_processor_count,
            memory_gib=p.total_memory / 2**30,
        )
        smi = _run(
            [
                "nvidia-smi",
                "--query-gpu=driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu",
                "--format=csv,noheader",
            ]
        )
        info["nvidia_smi"] = smi
        info["driver"] = smi.split(",")[0].strip() if smi else None
    return info


def device_slug(info: dict[str, Any]) -> str:
    """A file name for the device: 'NVIDIA H200' -> 'nvidia-h200'."""
    name = info.get("device_name") or "cpu"
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "device"


class PartLog:
    """A part's results as JSON, rewritten atomically after every ``put``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        self.t0 = time.perf_counter()

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()
        if self.path is not None:  # progress in the part's log, for a part that is capped
            print(f"{time.perf_counter() - self.t0:7.1f} s  {key} recorded", flush=True)

    def note(self, text: str) -> None:
        self.data.setdefault("notes", []).append(text)
        self.flush()

    def flush(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


class Deadline:
    """A part's wall-time budget: stop adding measurements once ``left()`` is small."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def timed_cli(argv: list[str]) -> tuple[int, float]:
    """``odedistill ARGV`` in this process: its exit status and its wall seconds."""
    from odedistill import cli_main as main

    t0 = time.perf_counter()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, time.perf_counter() - t0
