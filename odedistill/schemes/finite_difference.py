"""Finite-difference residual schemes on the collocation grid: first-order upwind and second-order central."""

from __future__ import annotations

import torch

from odedistill._tensor import append_dims
from odedistill.models.base import Path
from odedistill.schemes.base import ResidualScheme


class Upwind(ResidualScheme):
    """PID's scheme: v = (x(t_i) - x(t_j)) / (t_i - t_j) with j = i + 1 (j = N - 2 when i = N - 1).

    First order in the spacing. A student whose points t_j are exactly one explicit Euler step
    of the teacher from t_i has zero PID loss at every i < N - 1 (Tee et al. 2024, Theorem 1).
    """

    order = 1
    evaluations = 2

    def __call__(
        self, path: Path, grid: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        N = grid.shape[0]
        j = idx + 1
        j = torch.where(j == N, torch.full_like(j, N - 2), j)
        t_i, t_j = grid[idx], grid[j]
        y, y_j = path.many([t_i.to(path.dtype), t_j.to(path.dtype)], self.fused)
        v = (y - y_j) / append_dims((t_i - t_j).to(y.dtype), y.ndim)
        return t_i.to(path.dtype), y, v


def three_point_weights(
    nodes: torch.Tensor, at: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights (w0, w1, w2) with f'(at) ~ w0 f(s0) + w1 f(s1) + w2 f(s2) for nodes (B, 3).

    They are the derivatives of the quadratic Lagrange basis at ``at``: exact on quadratics,
    second order on smooth functions for any (non-uniform) spacing, central or one-sided.
    """
    s0, s1, s2 = nodes.unbind(-1)
    w0 = ((at - s1) + (at - s2)) / ((s0 - s1) * (s0 - s2))
    w1 = ((at - s0) + (at - s2)) / ((s1 - s0) * (s1 - s2))
    w2 = ((at - s0) + (at - s1)) / ((s2 - s0) * (s2 - s1))
    return w0, w1, w2


class Central(ResidualScheme):
    """Second-order derivative from the three grid points around t_i (non-uniform weights).

    Interior points use t_{i-1}, t_i, t_{i+1}; the two ends use the one-sided second-order
    formulas on t_0, t_1, t_2 and t_{N-3}, t_{N-2}, t_{N-1}. Needs N >= 3.
    """

    order = 2
    evaluations = 3

    def __call__(
        self, path: Path, grid: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        N = grid.shape[0]
        if N < 3:
            raise ValueError("the central scheme needs a grid of at least 3 points")
        first = (idx - 1).clamp(0, N - 3)
        stencil = first[:, None] + torch.arange(3, device=idx.device)[None, :]  # (B, 3)
        nodes = grid[stencil].double()
        t_i = grid[idx]
        w = three_point_weights(nodes, t_i.double())
        ys = path.many([nodes[:, m].to(path.dtype) for m in range(3)], self.fused)
        ndim = ys[0].ndim
        v = sum(append_dims(w[m].to(ys[m].dtype), ndim) * ys[m] for m in range(3))
        pos = append_dims(idx - first, ndim)  # which of the three is t_i
        y = torch.where(pos == 0, ys[0], torch.where(pos == 1, ys[1], ys[2]))
        return t_i.to(path.dtype), y, v
