"""The module DistributedDataParallel wraps: the per-sample PID loss of the student, in the run's precision."""

from __future__ import annotations

import torch
from torch import nn

from odedistill.distances import Distance
from odedistill.infra.precision import Precision
from odedistill.loss import pid_loss
from odedistill.models.base import TrajectoryModel
from odedistill.schemes.base import ResidualScheme
from odedistill.systems.base import ODESystem


class PIDObjective(nn.Module):
    """``odedistill.pid_loss`` of ``model`` as a module, returned as float32.

    Only the student is a submodule: the teacher (inside the system), the distance and the
    grid are held in a tuple, out of the module tree and out of DDP's parameter sync.
    """

    def __init__(
        self,
        model: TrajectoryModel,
        system: ODESystem,
        scheme: ResidualScheme,
        distance: Distance,
        grid: torch.Tensor,
        precision: Precision,
    ) -> None:
        super().__init__()
        self.model = model
        self._parts = (system, scheme, distance, grid, precision)

    def forward(
        self, z: torch.Tensor, idx: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        system, scheme, distance, grid, precision = self._parts
        losses = pid_loss(
            self.model, system, scheme, distance, grid, z, idx, cond, autocast=precision.autocast
        )
        return losses.float()
