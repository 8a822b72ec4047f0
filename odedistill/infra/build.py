"""Build what a validated config describes: the session (system, student, EMAs, scheme, grid), distance, optimiser."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from odedistill.distances import Distance, make_distance
from odedistill.grids import make_grid
from odedistill.infra.config import Config
from odedistill.infra.devices import resolve_device
from odedistill.infra.ema import EMA
from odedistill.infra.registries import (
    StudentNet,
    build_student_network,
    build_system,
    build_teacher,
)
from odedistill.infra.schema import flat
from odedistill.kinds import STUDENTS, SYSTEMS, Teacher
from odedistill.models.base import TrajectoryModel
from odedistill.models.parametrisation import Parametrisation
from odedistill.schemes import ResidualScheme, make_scheme
from odedistill.systems.base import ODESystem
from odedistill.systems.probe import check_system


@dataclass
class Session:
    """Everything a run trains, built from its config.

    ``student_spec`` is what rebuilds the student without the config's teacher (see
    :mod:`odedistill.infra.students`): the network's class and arguments, the
    parametrisation, and the system's kind, interval and shapes.
    """

    cfg: Config
    device: torch.device
    system: ODESystem
    model: TrajectoryModel
    ema: EMA
    scheme: ResidualScheme
    grid: torch.Tensor
    student_spec: dict[str, Any] = field(default_factory=dict)


def student_spec(
    cfg: Config, system: ODESystem, model: TrajectoryModel, net_spec: dict, from_recipe: bool
) -> dict[str, Any]:
    """The JSON description of a student that :mod:`odedistill.infra.students` rebuilds.

    A system given as a Python object (not built from the recipe) is recorded by class name
    only: it cannot be rebuilt from a file.
    """
    section = (
        flat(cfg.system) if from_recipe else {"kind": "object", "class": type(system).__qualname__}
    )
    return {
        "format": "odedistill-student-1",
        "trajectory": cfg.student.kind,
        **STUDENTS.get(cfg.student.kind).spec(model),
        "network": net_spec,
        "parametrisation": model.param.to_dict(),
        "t_start": model.t_start,
        "t_end": model.t_end,
        "grid": {"kind": cfg.scheme.grid, "N": cfg.scheme.N, "rho": cfg.scheme.rho},
        "state_shape": list(system.state_shape),
        "label_dim": int(system.label_dim),
        "system": section,
    }


def build_session(
    cfg: Config,
    device: torch.device | None = None,
    *,
    system: ODESystem | None = None,
    net: nn.Module | None = None,
) -> Session:
    """Seed, then build the system (with its teacher), student, EMAs, scheme and grid for ``cfg``.

    ``system`` and ``net`` replace the recipe's (the library API passes a user's own).
    """
    device = device or resolve_device(cfg.run.device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    teacher: Teacher | None = None
    from_recipe = system is None
    if system is None:
        if "needs_teacher" in SYSTEMS.get(cfg.system.kind).capabilities:
            teacher = build_teacher(cfg, device)
        system = build_system(cfg, device, teacher)
    check_system(system, device)
    if net is None:
        student = build_student_network(cfg, system, teacher)
    else:
        student = StudentNet(net, {"class": type(net).__qualname__, "kwargs": None})
    model = wrap_student(cfg, student.net, system, student.param).to(device)
    return Session(
        cfg=cfg,
        device=device,
        system=system,
        model=model,
        ema=EMA(model, cfg.train.ema_rates),
        scheme=build_scheme(cfg),
        grid=build_grid(cfg, system, device),
        student_spec=student_spec(cfg, system, model, student.spec, from_recipe),
    )


def wrap_student(
    cfg: Config, net: nn.Module, system: ODESystem, param: Parametrisation | None
) -> TrajectoryModel:
    """The student around ``net``, as its kind (``student.kind``) wraps it."""
    param = param or system.default_parametrisation()
    kind = STUDENTS.get(cfg.student.kind)
    model = kind.build(net, system, param, cfg.student.options, cfg)
    model.state_shape = tuple(system.state_shape)
    return model


def build_scheme(cfg: Config) -> ResidualScheme:
    return make_scheme(cfg.scheme.kind, fused=cfg.scheme.fused)


def build_grid(cfg: Config, system: ODESystem, device: torch.device) -> torch.Tensor:
    """The collocation grid (float64 for the derivative weights) on ``device``."""
    s = cfg.scheme
    return make_grid(s.grid, s.N, system.t_start, system.t_end, s.rho).to(device)


def build_distance(cfg: Config) -> Distance:
    return make_distance(cfg.loss.distance, cfg.loss.huber_c)


def build_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    o = cfg.optim
    cls = torch.optim.RAdam if o.name == "radam" else torch.optim.Adam
    foreach = {"foreach": True} if o.foreach else {}
    return cls(
        params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay, **foreach
    )


def learning_rate(cfg: Config, step: int, seconds: float = 0.0) -> float:
    """The learning rate of iteration ``step`` (0-based): linear warm-up, then a schedule.

    After the warm-up and a constant stretch of ``optim.decay_start`` of the remaining
    iterations, 'cosine' and 'linear' decay from ``optim.lr`` to 0 at ``train.iterations``.
    With ``train.max_seconds`` the decay runs on the larger of the two fractions used,
    iterations after warm-up and ``seconds`` of the budget, so it ends when either runs out.
    """
    o, total = cfg.optim, cfg.train.iterations
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    if cfg.train.max_seconds > 0:
        used = (step - o.warmup) / max(total - o.warmup, 1)
        p = min(1.0, max(used, seconds / cfg.train.max_seconds))
        if o.schedule == "constant" or p < o.decay_start:
            return o.lr
        p = (p - o.decay_start) / max(1 - o.decay_start, 1e-12)
        if o.schedule == "cosine":
            return o.lr * 0.5 * (1 + math.cos(math.pi * p))
        return o.lr * (1 - p)
    start = o.warmup + o.decay_start * (total - o.warmup)
    if o.schedule == "constant" or step < start:
        return o.lr
    span = max(total - start, 1)
    if o.schedule == "cosine":
        return o.lr * 0.5 * (1 + math.cos(math.pi * (step - start) / span))
    return o.lr * max(0.0, (total - step) / span)


def reported_weights(session: Session) -> str:
    """Which weights ``eval.ema`` reports as 'student': 'raw' or 'ema<rate>'."""
    cfg = session.cfg
    if cfg.eval.ema == 0.0 or not cfg.train.ema_rates:
        return "raw"
    rate = cfg.train.ema_rates[0] if cfg.eval.ema == -1.0 else cfg.eval.ema
    return f"ema{float(rate)!r}"


def weights_of(session: Session) -> dict[str, TrajectoryModel]:
    """The raw student and one model per EMA rate, named 'raw' and 'ema<rate>'."""
    return {"raw": session.model, **{f"ema{k}": m for k, m in session.ema.models.items()}}
