"""The module DistributedDataParallel wraps: the student kind's per-sample loss, assembled once from the run's config."""

from __future__ import annotations

from torch import nn

from odedistill.distances import Distance
from odedistill.infra.build import Session
from odedistill.infra.precision import Precision
from odedistill.kinds import STUDENTS
from odedistill.kinds.base import Indices, ObjectiveParts


def make_objective(
    session: Session, distance: Distance, precision: Precision
) -> tuple[nn.Module, Indices]:
    """The session's objective module and how the noise streams draw its indices: both the
    student kind's (``StudentKind.objective`` and ``.indices``)."""
    cfg = session.cfg
    kind = STUDENTS.get(cfg.student.kind)
    continuous = cfg.scheme.times == "continuous"
    parts = ObjectiveParts(
        model=session.model,
        system=session.system,
        scheme=session.scheme,
        distance=distance,
        grid=session.grid,
        device=session.device,
        autocast=precision.autocast,
        ema=next(iter(session.ema.models.values()), None),
        through=cfg.loss.target_grad == "through",
        causal_eps=cfg.loss.causal_eps,
        continuous=continuous,
    )
    options = cfg.student.options
    return kind.objective(parts, options), kind.indices(options, continuous)
