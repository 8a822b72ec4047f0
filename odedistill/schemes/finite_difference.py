"""Finite-difference residual schemes on a grid of the curve's variable: first-order upwind and second-order central."""

from __future__ import annotations

import torch

from odedistill._tensor import append_dims
from odedistill.models.curve import Curve
from odedistill.schemes.base import ResidualScheme


class Upwind(ResidualScheme):
    """PID's scheme: v = (y(u_i) - y(u_j)) / (u_i - u_j) with j = i + 1 (j = N - 2 when i = N - 1).

    First order in the spacing. On the collocation grid in t (u = t, y = x_θ(z, ·)), a student
    whose points t_j are exactly one explicit Euler step of the teacher from t_i has zero PID
    loss at every i < N - 1 (Tee et al. 2024, Theorem 1).
    """

    order = 1
    evaluations = 2

    def __call__(
        self, curve: Curve, grid: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        N = grid.shape[0]
        j = idx + 1
        j = torch.where(j == N, torch.full_like(j, N - 2), j)
        u_i, u_j = grid[idx], grid[j]
        y, y_j = curve.many([u_i.to(curve.dtype), u_j.to(curve.dtype)], self.fused)
        v = (y - y_j) / append_dims((u_i - u_j).to(y.dtype), y.ndim)
        return u_i.to(curve.dtype), y, v


def three_point_weights(
    nodes: torch.Tensor, at: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights (w0, w1, w2) with f'(at) ~ w0 f(u0) + w1 f(u1) + w2 f(u2) for nodes (B, 3).

    They are the derivatives of the quadratic Lagrange basis at ``at``: exact on quadratics,
    second order on smooth functions for any (non-uniform) spacing, central or one-sided.
    """
    u0, u1, u2 = nodes.unbind(-1)
    w0 = ((at - u1) + (at - u2)) / ((u0 - u1) * (u0 - u2))
    w1 = ((at - u0) + (at - u2)) / ((u1 - u0) * (u1 - u2))
    w2 = ((at - u0) + (at - u1)) / ((u2 - u0) * (u2 - u1))
    return w0, w1, w2


class Central(ResidualScheme):
    """Second-order derivative from the three grid points around u_i (non-uniform weights).

    Interior points use u_{i-1}, u_i, u_{i+1}; the two ends use the one-sided second-order
    formulas on u_0, u_1, u_2 and u_{N-3}, u_{N-2}, u_{N-1}. Needs N >= 3.
    """

    order = 2
    evaluations = 3

    def __call__(
        self, curve: Curve, grid: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        N = grid.shape[0]
        if N < 3:
            raise ValueError("the central scheme needs a grid of at least 3 points")
        first = (idx - 1).clamp(0, N - 3)
        stencil = first[:, None] + torch.arange(3, device=idx.device)[None, :]  # (B, 3)
        nodes = grid[stencil].double()
        u_i = grid[idx]
        w = three_point_weights(nodes, u_i.double())
        ys = curve.many([nodes[:, m].to(curve.dtype) for m in range(3)], self.fused)
        ndim = ys[0].ndim
        v = sum(append_dims(w[m].to(ys[m].dtype), ndim) * ys[m] for m in range(3))
        pos = append_dims(idx - first, ndim)  # which of the three is u_i
        y = torch.where(pos == 0, ys[0], torch.where(pos == 1, ys[1], ys[2]))
        return u_i.to(curve.dtype), y, v
