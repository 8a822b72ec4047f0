"""A system's own scale: per-dimension mean and std of its initial states and conditions, and |f|².

Drawn once from the system's samplers with a fixed seed, so a student built from them is the
same on every run. Students standardise their inputs with these numbers
(``student.normalise``) and causal weighting divides residuals by ``f2`` so that its ε has one
meaning on every system.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from odedistill.systems.base import ODESystem

#: draws behind the statistics, and their seed
STATS_DRAWS = 4096
STATS_SEED = 77


@dataclass(frozen=True)
class InputStatistics:
    """x_mean, x_std: per flattened state dimension; c_mean, c_std: per condition value (or
    None)."""

    x_mean: list[float]
    x_std: list[float]
    c_mean: list[float] | None
    c_std: list[float] | None


def _floored_std(x: torch.Tensor) -> torch.Tensor:
    """Per-column std, floored at 1e-3 of the largest (a constant column is not blown up)."""
    s = x.std(0)
    return s.clamp_min(1e-3 * float(s.max()) + 1e-12)


@torch.no_grad()
def input_statistics(
    system: ODESystem, n: int = STATS_DRAWS, seed: int = STATS_SEED
) -> InputStatistics:
    """The statistics of ``n`` initial states and conditions drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, g, dtype=torch.float64)
    c = system.sample_condition(n, g)
    zf = z.flatten(1)
    c_mean = c_std = None
    if c is not None:
        c64 = c.double().flatten(1)
        c_mean, c_std = c64.mean(0).tolist(), _floored_std(c64).tolist()
    return InputStatistics(zf.mean(0).tolist(), _floored_std(zf).tolist(), c_mean, c_std)


@torch.no_grad()
def residual_scale(
    system: ODESystem,
    n: int = STATS_DRAWS,
    seed: int = STATS_SEED,
    device: torch.device | str = "cpu",
) -> float:
    """f2 = mean over ``n`` draws and dimensions of target(z, t_start, c)²: the size of the
    residual of a student that has learnt nothing (velocities for a plain system)."""
    g = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, g).to(device)
    c = system.sample_condition(n, g)
    c = None if c is None else c.to(device)
    t0 = torch.full((n,), float(system.t_start), dtype=z.dtype, device=device)
    value = float(system.target(z, t0, c).double().pow(2).mean())
    return value if value > 0 else 1.0
