"""What a run or a benchmark ran on: versions, CPU or GPU model, threads, load, peak memory."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
from pathlib import Path
from typing import Any

import torch

from odedistill._version import __version__


def peak_memory_gib(device: torch.device) -> tuple[float, str]:
    """(peak memory in GiB, what was measured): CUDA ``max_memory_allocated`` or the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 2**30 if platform.system() == "Darwin" else 2**20
    return rss / scale, "cpu_max_rss"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The checked-out commit (with '+dirty' for local changes), or None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages; empty where the platform has none."""
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return []


def machine_info(device: torch.device, **extra: Any) -> dict[str, Any]:
    """Versions, device and its name, threads, cores and load average, plus ``extra``."""
    info: dict[str, Any] = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "odedistill": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if load := load_average():
        info["load_average"] = load
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    info.update(extra)
    return info
