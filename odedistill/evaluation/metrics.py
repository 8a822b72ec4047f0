"""Sample-quality and accuracy metrics: sliced Wasserstein-1; the trajectory errors (norm-relative, median, p95; mean relative) live in ``odedistill.solvers``."""

from __future__ import annotations

import torch

from odedistill.solvers import relative_error, trajectory_errors

__all__ = ["relative_error", "sliced_w1", "trajectory_errors"]


def sliced_w1(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 between two equal-size samples (n, ...).

    Average over ``projections`` random unit directions u of W1 between the 1-D samples
    <a, u> and <b, u>, which is the mean absolute difference of their sorted values.
    """
    a, b = a.double().flatten(1), b.double().flatten(1)
    if a.shape != b.shape:
        raise ValueError(
            f"sliced_w1 needs equal-size samples, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    pa, _ = (a.cpu() @ u).sort(dim=0)
    pb, _ = (b.cpu() @ u).sort(dim=0)
    return (pa - pb).abs().mean().item()
