"""A linear system dx/dt = A x with the closed-form solution x(t) = expm(A (t - t0)) z."""

from __future__ import annotations

import torch

from odedistill.systems.base import ODESystem


class LinearODE(ODESystem):
    """dx/dt = A x on [t_start, t_end], z ~ N(0, z_scale^2 I); exact by the matrix exponential.

    The default A = [[-0.5, -2], [2, -0.5]] is a decaying spiral: every state turns about
    a third of a circle and shrinks by e^-0.5 over the unit interval.
    """

    def __init__(
        self,
        A: torch.Tensor | list[list[float]] | None = None,
        t_start: float = 0.0,
        t_end: float = 1.0,
        z_scale: float = 1.0,
    ) -> None:
        if A is None:
            A = [[-0.5, -2.0], [2.0, -0.5]]
        A = torch.as_tensor(A, dtype=torch.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square matrix, got shape {tuple(A.shape)}")
        self.A = A
        self.state_shape = (A.shape[0],)
        self.t_start, self.t_end, self.z_scale = float(t_start), float(t_end), float(z_scale)

    def f(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return x @ self.A.to(x).T

    def sample_initial(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return torch.randn((n, *self.state_shape), generator=generator, dtype=dtype) * self.z_scale

    def exact_solution(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).expand(z.shape[0])
        Phi = torch.linalg.matrix_exp((t - self.t_start)[:, None, None] * self.A)  # (B, d, d)
        return torch.einsum("bij,bj->bi", Phi, z.double()).to(z.dtype)
