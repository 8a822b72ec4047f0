"""The module DistributedDataParallel wraps: the student kind's per-sample loss, assembled once from the run's config."""

from __future__ import annotations

from torch import nn

from odedistill.distances import Distance
from odedistill.infra.build import Session
from odedistill.infra.precision import Precision
from odedistill.kinds import STUDENTS
from odedistill.kinds.base import Indices, ObjectiveParts
from odedistill.training.solved import SolvedObjective, SolvedStates, pool_times, with_pool_indices


def make_objective(
    session: Session, distance: Distance, precision: Precision
) -> tuple[nn.Module, Indices, float]:
    """The session's objective module, how the noise streams draw its indices (both the
    student kind's: ``StudentKind.objective`` and ``.indices``) and the process seconds spent
    building it: with ``loss.solved``, the kind's objective plus the solved states' misfit
    (``training.solved``), whose reference solve those seconds are."""
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
    objective, indices = kind.objective(parts, options), kind.indices(options, continuous)
    if cfg.loss.solved <= 0:
        return objective, indices, 0.0
    dtype = next(session.model.parameters()).dtype
    times = pool_times(session.grid)
    pool = SolvedStates(session.system, cfg.loss.solved, times, cfg.run.seed, session.device, dtype)
    solved = SolvedObjective(
        objective,
        session.model,
        pool,
        cfg.loss.solved_weight,
        distance,
        cfg.loss.residual_fraction,
    )
    return solved, with_pool_indices(indices, pool.M, times.shape[0]), pool.seconds
