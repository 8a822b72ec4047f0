"""A damped pendulum, theta'' = -sin(theta) - gamma theta': a nonlinear ODE with no closed form."""

from __future__ import annotations

import torch

from odedistill.systems.base import ODESystem


class DampedPendulum(ODESystem):
    """State (theta, omega); d theta/dt = omega, d omega/dt = -sin(theta) - gamma omega on [0, T].

    Initial states are drawn as N(0, spread^2 I), so large swings (where the sine is far
    from linear) are common. The reference solution comes from scipy. This is the system
    written step by step in docs/custom_ode.md.
    """

    def __init__(self, gamma: float = 0.25, T: float = 1.5, spread: float = 1.5) -> None:
        self.gamma, self.spread = gamma, spread
        self.t_start, self.t_end = 0.0, T
        self.state_shape = (2,)

    def f(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        theta, omega = x[:, 0], x[:, 1]
        return torch.stack([omega, -torch.sin(theta) - self.gamma * omega], dim=1)

    def sample_initial(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return torch.randn((n, 2), generator=generator, dtype=dtype) * self.spread
