"""PID's boundary-exact student: x(z, t) = w(t) z + (1 - w(t)) F(c_in z, c_noise(t)), w(t_start) = 1."""

from __future__ import annotations

import torch
from torch import nn

from odedistill._tensor import append_dims
from odedistill.models.base import TrajectoryModel
from odedistill.models.parametrisation import Parametrisation
from odedistill.systems.base import ODESystem


class BoundaryTrajectory(TrajectoryModel):
    """Wrap any network ``F(x, c_noise, class_labels=None)`` into a trajectory that meets x(t_start) = z.

        x_theta(z, t) = w(t) z + (1 - w(t)) F(c_in z, c_noise(t), cond),
        w(t) = (t - t_anchor) / (t_start - t_anchor),   c_in = c_in(t_start).

    For the probability-flow ODE (Tee et al. 2024, PID) t_anchor = 0, so w(t) = t / T; the
    network always sees the same ``c_in z`` and only its time input moves.

    Args:
        net: the network F; it receives states of the system's shape.
        t_start, t_end: the system's interval.
        param: anchor, input scale and time input (``Parametrisation``).
    """

    def __init__(
        self, net: nn.Module, t_start: float, t_end: float, param: Parametrisation
    ) -> None:
        super().__init__()
        self.net = net
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.param = param
        self.t_anchor = float(param.t_anchor)
        if self.t_anchor == self.t_start:
            raise ValueError("t_anchor must differ from t_start")
        self.c_in = param.c_in.at(self.t_start)

    @classmethod
    def for_system(
        cls, net: nn.Module, system: ODESystem, param: Parametrisation | None = None
    ) -> BoundaryTrajectory:
        """The trajectory of ``system`` around ``net`` (default parametrisation unless given)."""
        param = param or system.default_parametrisation()
        return cls(net, system.t_start, system.t_end, param)

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        return self.param.c_noise(t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return (t - self.t_anchor) / (self.t_start - self.t_anchor)

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        F_x = self.net(self.c_in * z, self.c_noise(t), class_labels=cond)
        w = append_dims(self.weight(t), z.ndim).to(F_x.dtype)
        return w * z + (1 - w) * F_x
