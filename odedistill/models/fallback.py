"""What a checked sample returns, and the fallback that re-solves the samples its indicator flags
(``odedistill.models.trust`` computes the indicator)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from odedistill.errors import UserError
from odedistill.models.trust import residual_indicator
from odedistill.solvers import solve_reference
from odedistill.systems.base import ODESystem

#: the student (``odedistill.models.base``, which imports this module: named here without
#: importing it)
TrajectoryModel = Any
Fallback = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


class Checked(NamedTuple):
    """A checked sample: the states x (B, ...), the error indicator (B,) and which samples
    were re-solved (bool, B)."""

    x: torch.Tensor
    error: torch.Tensor
    resolved: torch.Tensor


def flagged(error: torch.Tensor, threshold: float | None, fraction: float | None) -> torch.Tensor:
    """Samples to re-solve: indicator above ``threshold``, or the worst ``fraction`` of them."""
    if (threshold is None) == (fraction is None):
        raise UserError("a fallback needs exactly one of threshold= (indicator) or fraction=")
    if threshold is not None:
        return error > threshold
    if not 0 <= fraction <= 1:
        raise UserError(f"fraction must be in [0, 1], got {fraction}")
    n = math.ceil(fraction * error.shape[0])
    mask = torch.zeros_like(error, dtype=torch.bool)
    mask[torch.topk(error, n).indices] = True
    return mask


def checked_sample(
    model: TrajectoryModel,
    x: torch.Tensor,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    times: list[float],
    system: ODESystem,
    fallback: str | Fallback | None,
    threshold: float | None,
    fraction: float | None,
    points: int | None,
) -> Checked:
    """The sample x with its indicator, flagged samples replaced by ``fallback``'s solution."""
    error = residual_indicator(model, z, cond, times, system, points)
    if fallback is None:
        return Checked(x, error, torch.zeros_like(error, dtype=torch.bool))
    if fallback == "solver":

        def fallback(z, cond):
            return solve_reference(system, z, cond)

    elif not callable(fallback):
        raise UserError(f"fallback must be 'solver' or a function (z, cond) -> x, not {fallback!r}")
    mask = flagged(error, threshold, fraction)
    x = x.clone()
    if mask.any():
        idx = mask.nonzero()[:, 0]
        x[idx] = fallback(z[idx], None if cond is None else cond[idx]).to(x)
    return Checked(x, error, mask)
