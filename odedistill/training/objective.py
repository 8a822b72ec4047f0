"""The module DistributedDataParallel wraps: the per-sample PID loss of the student, in the run's precision (causally weighted with loss.causal_eps)."""

from __future__ import annotations

import torch
from torch import nn

from odedistill.distances import Distance
from odedistill.errors import UserError
from odedistill.infra.build import Session
from odedistill.infra.noise import Indices, continuous_indices, pid_indices
from odedistill.infra.precision import Precision
from odedistill.loss import CausalWeights, pid_loss
from odedistill.models.base import TrajectoryModel
from odedistill.models.flowmap import FlowMap
from odedistill.schemes.base import ResidualScheme
from odedistill.systems.base import ODESystem
from odedistill.systems.scale import residual_scale
from odedistill.training.flowmap import FlowMapObjective, flowmap_indices


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
        causal: CausalWeights | None = None,
        through: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self._parts = (system, scheme, distance, grid, precision)
        self.causal = causal
        self.through = through

    def forward(
        self, z: torch.Tensor, idx: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        system, scheme, distance, grid, precision = self._parts
        losses = pid_loss(
            self.model,
            system,
            scheme,
            distance,
            grid,
            z,
            idx,
            cond,
            autocast=precision.autocast,
            through=self.through,
        ).float()
        return losses if self.causal is None else self.causal(idx, losses)


def make_objective(
    session: Session, distance: Distance, precision: Precision
) -> tuple[nn.Module, Indices]:
    """The session's objective module and how the noise streams draw its indices."""
    if isinstance(session.model, FlowMap):
        f = session.cfg.student.options
        ema = next(iter(session.ema.models.values()), None)
        if f.source_state == "ema" and ema is None:
            raise UserError("student.source_state = 'ema' needs an EMA: set train.ema_rates")
        objective = FlowMapObjective(
            session.model,
            session.system,
            session.scheme,
            distance,
            session.grid,
            precision,
            source_state=f.source_state,
            ema=ema,
            through=session.cfg.loss.target_grad == "through",
        )
        continuous = session.cfg.scheme.times == "continuous"
        return objective, flowmap_indices(f.p_T, f.steps, f.sources, continuous)
    causal = None
    if session.cfg.loss.causal_eps > 0:
        system = session.system
        f2 = residual_scale(system, 64 if system.is_image else 4096, device=session.device)
        causal = CausalWeights(session.grid.shape[0], session.cfg.loss.causal_eps, f2)
    objective = PIDObjective(
        session.model,
        session.system,
        session.scheme,
        distance,
        session.grid,
        precision,
        causal,
        through=session.cfg.loss.target_grad == "through",
    )
    return (
        objective,
        continuous_indices if session.cfg.scheme.times == "continuous" else pid_indices,
    )
