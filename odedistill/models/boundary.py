"""PID's boundary-exact student: x(z, t) = w(t) z + (1 - w(t)) F(c_in z, c_noise(t)), w(t_start) = 1."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from odedistill._tensor import append_dims
from odedistill.models.base import TrajectoryModel
from odedistill.systems.base import ODESystem


class BoundaryTrajectory(TrajectoryModel):
    """Wrap any network ``F(x, c_noise, class_labels=None)`` into a trajectory that meets x(t_start) = z.

        x_theta(z, t) = w(t) z + (1 - w(t)) F(c_in z, c_noise(t), cond),
        w(t) = (t - t_anchor) / (t_start - t_anchor).

    For the probability-flow ODE (Tee et al. 2024, PID) t_anchor = 0, so w(t) = t / T; the
    network always sees the same ``c_in z`` and only its time input moves.

    Args:
        net: the network F; it receives states of the system's shape.
        t_start, t_end: the system's interval.
        t_anchor: where z's weight vanishes (t_end by default).
        c_in: input scale applied to z.
        c_noise: the time input map (the identity by default).
    """

    def __init__(
        self,
        net: nn.Module,
        t_start: float,
        t_end: float,
        t_anchor: float | None = None,
        c_in: float = 1.0,
        c_noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.t_anchor = self.t_end if t_anchor is None else float(t_anchor)
        if self.t_anchor == self.t_start:
            raise ValueError("t_anchor must differ from t_start")
        self.c_in = float(c_in)
        self._c_noise = c_noise

    @classmethod
    def for_system(cls, net: nn.Module, system: ODESystem) -> BoundaryTrajectory:
        """The trajectory model with the parametrisation ``system`` asks for."""
        return cls(
            net,
            system.t_start,
            system.t_end,
            t_anchor=system.trajectory_anchor,
            c_in=system.student_input_scale,
            c_noise=system.student_time,
        )

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        return t if self._c_noise is None else self._c_noise(t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return (t - self.t_anchor) / (self.t_start - self.t_anchor)

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        F_x = self.net(self.c_in * z, self.c_noise(t), class_labels=cond)
        w = append_dims(self.weight(t), z.ndim).to(F_x.dtype)
        return w * z + (1 - w) * F_x
