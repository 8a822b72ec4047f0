"""Run monitoring: peak memory, the machine a run uses (run_info.json), sample grids from fixed seeds."""

from __future__ import annotations

import datetime
import os
import platform
import resource
from pathlib import Path
from typing import Any

import torch

from odedistill.evaluation import plots
from odedistill.models.base import TrajectoryModel
from odedistill.systems.base import ODESystem


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


def run_info(device: torch.device, world_size: int, **extra: Any) -> dict[str, Any]:
    """What a run ran on: versions, device, world size, precision options (``extra``)."""
    info: dict[str, Any] = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "device": str(device),
        "device_name": device_name(device),
        "world_size": world_size,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    info.update(extra)
    return info


@torch.no_grad()
def write_sample_grid(
    model: TrajectoryModel,
    system: ODESystem,
    path: Path,
    seed: int,
    grid_size: int = 8,
    n_points: int = 1000,
    batch: int = 64,
) -> Path | None:
    """One-step samples from fixed seeds: an image grid, or a 2-D scatter; None for other states.

    The initial states (and class labels) come from a generator seeded with ``seed``, so
    every grid of a run shows the same z.
    """
    if system.is_image:
        n = grid_size**2
    elif system.dim == 2:
        n = n_points
    else:
        return None
    gen = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, gen)
    cond = system.sample_condition(n, gen)
    device = next(model.parameters()).device
    xs = []
    for start in range(0, n, batch):
        c = None if cond is None else cond[start : start + batch].to(device)
        xs.append(model.sample(z[start : start + batch].to(device), c).float().cpu())
    x = torch.cat(xs)
    if system.is_image:
        scale = max(1, 256 // (grid_size * system.state_shape[-1]))
        return plots.save_image_grid(x.clamp(-1, 1), path, cols=grid_size, scale=scale)
    panels = {f"student, 1 step ({path.stem})": x}
    try:
        panels["data"] = system.sample_data(n, gen).float()
    except NotImplementedError:
        pass
    return plots.plot_2d(panels, path)
