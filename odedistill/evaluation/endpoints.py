"""The teacher's endpoints of the held-out states, computed once per run and cached in its folder.

A network teacher has no closed-form solution and no data of its own: the end-of-run check
compares the student with Heun's method on the teacher's ODE through the collocation grid,
2 (N − 1) teacher evaluations per state. They are computed once, with a progress bar, and kept
in ``teacher_endpoints.safetensors`` beside eval.json with the states z they belong to and a
key (seed, grid, teacher); a later evaluation of the same run reuses them when z and the key
agree, and recomputes them otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file

from odedistill._io import atomic_write
from odedistill.infra.progress import progress_bar
from odedistill.solvers import heun, heun_nfe
from odedistill.systems.base import ODESystem

CACHE_FILE = "teacher_endpoints.safetensors"
CHUNK = 64  # states per Heun solve, so that the bar moves


def _read(path: Path, key: dict[str, Any], z: torch.Tensor) -> torch.Tensor | None:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            if json.loads((f.metadata() or {}).get("key", "null")) != key:
                return None
            cached_z, x = f.get_tensor("z"), f.get_tensor("x")
    except Exception:  # an unreadable cache is recomputed, never trusted
        return None
    return x if cached_z.shape == z.shape and torch.equal(cached_z, z.cpu()) else None


def teacher_key(cfg_teacher: dict[str, Any], seed: int, grid: torch.Tensor) -> dict[str, Any]:
    """What the endpoints depend on besides z: the teacher section (and its file's size and
    time), the held-out seed and the solver's grid."""
    key: dict[str, Any] = {"teacher": cfg_teacher, "seed": seed, "grid": grid.tolist()}
    path = Path(str(cfg_teacher.get("path", "")))
    if path.is_file():
        st = path.stat()
        key["teacher_file"] = [st.st_size, st.st_mtime_ns]
    return json.loads(json.dumps(key))


def teacher_endpoints(
    system: ODESystem,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    grid: torch.Tensor,
    label: str,
    key: dict[str, Any],
    run_dir: Path | None = None,
    console: Console | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Heun through ``grid`` from every z (float64), from the run's cache when it holds them.

    Returns the endpoints and what they cost: ``{"evaluations_per_state", "seconds", "cached"}``.
    """
    console = console or Console(stderr=True, quiet=True)
    path = None if run_dir is None else Path(run_dir) / CACHE_FILE
    nfe = heun_nfe(len(grid))
    if path is not None and path.is_file():
        x = _read(path, key, z)
        if x is not None:
            console.print(f"{label}: {len(z)} endpoints read from {path}")
            return x, {"evaluations_per_state": 0, "seconds": 0.0, "cached": True}
    t0 = time.perf_counter()
    parts = []
    with progress_bar(not console.quiet, console=console) as bar:
        task = bar.add_task(f"{label} ({nfe} evaluations)", total=len(z))
        for k in range(0, len(z), CHUNK):
            c = None if cond is None else cond[k : k + CHUNK]
            parts.append(heun(system, z[k : k + CHUNK].double(), grid, c).double().cpu())
            bar.advance(task, len(parts[-1]))
    x = torch.cat(parts)
    seconds = time.perf_counter() - t0
    where = ""
    if path is not None:
        tensors = {"z": z.detach().cpu().contiguous(), "x": x.contiguous()}
        meta = {"key": json.dumps(key)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        where = f"; kept in {path}"
    console.print(
        f"{label}: {nfe} teacher evaluations for each of {len(z)} held-out states, "
        f"{seconds:.1f} s{where}"
    )
    return x, {"evaluations_per_state": nfe, "seconds": seconds, "cached": False}
