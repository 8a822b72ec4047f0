"""A fourth residual scheme, written the way a user adds one: this file plus one registration line.

Second-order one-sided difference at t_i from t_i, t_{i+1}, t_{i+2} (the points the trajectory
reaches next), shifted back to t_{N-3}, t_{N-2}, t_{N-1} at the end of the grid.
"""

from __future__ import annotations

import torch

from odedistill import Path, ResidualScheme
from odedistill._tensor import append_dims
from odedistill.schemes import three_point_weights


class BDF2(ResidualScheme):
    """Second-order backward difference on the next two grid points, 3 evaluations."""

    order = 2
    evaluations = 3

    def __call__(
        self, path: Path, grid: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        N = grid.shape[0]
        first = idx.clamp(max=N - 3)
        nodes = grid[first[:, None] + torch.arange(3, device=idx.device)[None, :]].double()
        t_i = grid[idx]
        w = three_point_weights(nodes, t_i.double())
        ys = path.many([nodes[:, m].to(path.dtype) for m in range(3)], self.fused)
        ndim = ys[0].ndim
        v = sum(append_dims(w[m].to(ys[m].dtype), ndim) * ys[m] for m in range(3))
        pos = append_dims(idx - first, ndim)
        y = torch.where(pos == 0, ys[0], torch.where(pos == 1, ys[1], ys[2]))
        return t_i.to(path.dtype), y, v
