"""Collocation grids: Karras et al. (2022) eq. 5 with exponent rho, and uniform."""

from __future__ import annotations

import torch

from odedistill.registry import Registry


def karras_grid(
    N: int, t_start: float, t_end: float, rho: float = 7.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """t_i = (t_start^(1/rho) + i/(N-1) (t_end^(1/rho) - t_start^(1/rho)))^rho, i = 0..N-1.

    ``t_0 = t_start`` and ``t_{N-1} = t_end`` exactly. Both ends must be non-negative.
    """
    if N < 2:
        raise ValueError(f"a grid needs N >= 2 points, got {N}")
    if t_start < 0 or t_end < 0:
        raise ValueError("the Karras grid needs non-negative times; use the uniform grid")
    i = torch.arange(N, dtype=torch.float64)
    a, b = t_start ** (1.0 / rho), t_end ** (1.0 / rho)
    t = (a + i / (N - 1) * (b - a)) ** rho
    t[0], t[-1] = t_start, t_end
    return t.to(dtype)


def uniform_grid(
    N: int, t_start: float, t_end: float, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """N equally spaced times from t_start to t_end (both included)."""
    if N < 2:
        raise ValueError(f"a grid needs N >= 2 points, got {N}")
    return torch.linspace(t_start, t_end, N, dtype=torch.float64).to(dtype)


GRIDS: Registry = Registry("collocation grid")
GRIDS.register(
    "karras",
    lambda N, t_start, t_end, rho: karras_grid(N, t_start, t_end, rho),
    help="Karras et al. (2022) spacing with exponent rho, dense near t_end; needs t >= 0",
)
GRIDS.register(
    "uniform",
    lambda N, t_start, t_end, rho: uniform_grid(N, t_start, t_end),
    help="equal spacing (rho unused)",
)


def make_grid(kind: str, N: int, t_start: float, t_end: float, rho: float = 7.0) -> torch.Tensor:
    """Build the grid registered as ``kind`` (``GRIDS.names()``) in float64."""
    return GRIDS.get(kind)(N, t_start, t_end, rho)


def times_at(grid: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The collocation times at ``idx``: grid[idx] for integer indices; for fractional positions
    u in [0, N − 1] the piecewise-linear interpolation t = t_k + (u − k)(t_{k+1} − t_k), k = ⌊u⌋
    (continuous times with the grid's density: uniform in t on a uniform grid)."""
    if not idx.is_floating_point():
        return grid[idx]
    N = grid.shape[0]
    k = idx.floor().long().clamp(0, N - 2)
    frac = (idx.to(grid.dtype) - k.to(grid.dtype)).clamp(0, 1)
    return grid[k] + frac * (grid[k + 1] - grid[k])
