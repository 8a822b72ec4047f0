"""Assembly from the config: the recipe's teacher and system (by their kinds, ``odedistill.kinds``)
and the student's network (``student.net``).

The residual schemes, grids and distances have registries of their own beside their
implementations (``odedistill.schemes.SCHEMES``, ``odedistill.grids.GRIDS``,
``odedistill.distances.DISTANCES``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.kinds import STUDENTS, SYSTEMS, TEACHERS, Teacher
from odedistill.models.nets import MLP, SmallUNet
from odedistill.models.parametrisation import Parametrisation, UnitTime
from odedistill.registry import Registry
from odedistill.systems.base import ODESystem
from odedistill.systems.scale import input_statistics
from odedistill.teachers.diffusers import DiffusersUNet
from odedistill.teachers.networks import NETWORKS as EDM_NETWORKS

TEACHER_NETWORKS: dict[str, type[nn.Module]] = {**EDM_NETWORKS, "DiffusersUNet": DiffusersUNet}
"""The raw networks of teachers a student can copy, by the preconditioner's ``model_type``."""

#: the validated recipe that the builders read (``odedistill.infra.config.Config``); that module
#: imports these registries (its fields' choices), so they name its type without importing it
Config = Any


def build_teacher(cfg: Config, device: torch.device) -> Teacher:
    """The recipe's teacher on ``device``, in eval mode with gradients off."""
    teacher = TEACHERS.get(cfg.teacher.kind).build(cfg.teacher.options, cfg, device)
    teacher.denoiser.eval().requires_grad_(False)
    return teacher


def build_system(cfg: Config, device: torch.device, teacher: Teacher | None = None) -> ODESystem:
    """The ODE the recipe distils; builds its teacher on ``device`` when it needs one.

    ``teacher`` overrides that (a shapes-only ``Teacher`` rebuilds a system without its teacher).
    """
    kind = SYSTEMS.get(cfg.system.kind)
    if "needs_teacher" in kind.capabilities and teacher is None:
        teacher = build_teacher(cfg, device)
    return kind.build(cfg.system.options, cfg, teacher)


# ----------------------------------------------------------------------- student networks
class StudentNet(NamedTuple):
    """A student's network F, what rebuilds it, and the parametrisation it needs (None: the
    system's default)."""

    net: nn.Module
    spec: dict[str, Any]
    param: Parametrisation | None = None


NETWORKS: Registry[Callable[[Config, ODESystem, Teacher | None], StudentNet]] = Registry(
    "student network"
)


def _kind_net_kwargs(cfg: Config) -> dict[str, Any]:
    """The student kind's extra constructor arguments of its network (a flow map's second time
    input; none for a PID student, so its stored arguments stay those of the one-time network)."""
    return STUDENTS.get(cfg.student.kind).net_kwargs(cfg.student.options)


def _mlp(cfg: Config, system: ODESystem, teacher: Teacher | None) -> StudentNet:
    st = cfg.student
    kwargs: dict[str, Any] = dict(
        state_shape=list(system.state_shape),
        width=st.width,
        depth=st.depth,
        label_dim=system.label_dim,
        **_kind_net_kwargs(cfg),
    )
    if st.x_fourier:
        kwargs.update(x_fourier=st.x_fourier, x_fourier_max=st.x_fourier_max)
    param = None
    if st.time == "unit":
        kwargs["max_freq"] = 16.0
        base = system.default_parametrisation()
        param = dataclasses.replace(base, c_noise=UnitTime(system.t_start, system.t_end))
    stats = input_statistics(system) if st.normalise or st.normalise_output else None
    if stats is not None and st.normalise:
        kwargs.update(x_mean=stats.x_mean, x_std=stats.x_std)
        if system.label_dim and stats.c_mean is not None:
            kwargs.update(c_mean=stats.c_mean, c_std=stats.c_std)
    if stats is not None and st.normalise_output:
        kwargs.update(out_mean=stats.x_mean, out_std=stats.x_std)
    return StudentNet(MLP(**kwargs), {"class": "MLP", "kwargs": kwargs}, param)


def _unet(cfg: Config, system: ODESystem, teacher: Teacher | None) -> StudentNet:
    st = cfg.student
    if not system.is_image:
        raise UserError(
            f"student.net = 'unet' needs image states (C, H, W), but the system's states have "
            f"shape {system.state_shape}; use student.net = 'mlp'"
        )
    kwargs = dict(
        state_shape=list(system.state_shape),
        channels=st.channels,
        channel_mult=list(st.channel_mult),
        blocks=st.blocks,
        attention=st.attention,
        label_dim=system.label_dim,
        **_kind_net_kwargs(cfg),
    )
    return StudentNet(SmallUNet(**kwargs), {"class": "SmallUNet", "kwargs": kwargs})


def _without_augment(net: nn.Module) -> nn.Module:
    """Freeze EDM's augmentation-label mapping: the student never receives augment labels.

    The weights stay in the state dict (and load into the teacher's layout) but take no
    gradient, so DistributedDataParallel sees no unused trainable parameter.
    """
    for m in net.modules():
        augment = getattr(m, "map_augment", None)
        if isinstance(augment, nn.Module):
            augment.requires_grad_(False)
    return net


def _teacher_copy(cfg: Config, system: ODESystem, teacher: Teacher | None) -> StudentNet:
    """The teacher's raw network (or a fresh one of its architecture), fed as the teacher feeds it."""
    st = cfg.student
    D = None if teacher is None else teacher.denoiser
    if D is None or "network" not in TEACHERS.get(cfg.teacher.kind).capabilities:
        copyable = [n for n in TEACHERS.names() if "network" in TEACHERS.get(n).capabilities]
        raise UserError(
            "student.net = 'teacher' copies the teacher's raw network, which only a teacher "
            f"of kind {', '.join(map(repr, copyable))} has; use student.net = 'mlp' or 'unet'"
        )
    extra = _kind_net_kwargs(cfg)
    if extra and D.model_type not in EDM_NETWORKS:
        raise UserError(
            f"student.kind = '{cfg.student.kind}' needs a second time input, which the {D.model_type} "
            "copy does not have; use an EDM teacher, or student.net = 'unet' with this teacher"
        )
    kwargs = {**D.model_kwargs, "dropout": st.dropout, **extra}
    device = next(D.model.parameters()).device
    if st.init == "teacher" and not extra:
        net = copy.deepcopy(D.model)
    elif st.init == "teacher":  # the teacher's weights, and a source-time branch that starts at 0
        net = EDM_NETWORKS[D.model_type](**D.model_kwargs, **extra).to(device)
        missing, unexpected = net.load_state_dict(D.model.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("second_time.") for k in missing)
    else:
        fresh = TEACHER_NETWORKS[D.model_type](**kwargs)  # what a checkpoint rebuilds
        net = fresh.to(device)
    net.set_dropout(st.dropout)  # the student's dropout rate (PID: 0)
    net = _without_augment(net.train().requires_grad_(True))
    return StudentNet(net, {"class": D.model_type, "kwargs": kwargs}, D.parametrisation())


NETWORKS.register("mlp", _mlp, help="a residual MLP for vector states")
NETWORKS.register("unet", _unet, help="a small UNet for images")
NETWORKS.register(
    "teacher",
    _teacher_copy,
    help="the EDM or diffusers teacher's own architecture, fed as the teacher feeds it "
    "(student.init)",
)


def build_student_network(cfg: Config, system: ODESystem, teacher: Teacher | None) -> StudentNet:
    """The student's network F for ``system``, with what rebuilds it and its parametrisation."""
    if cfg.student.init == "teacher" and cfg.student.net != "teacher":
        raise UserError("student.init = 'teacher' needs student.net = 'teacher'")
    return NETWORKS.get(cfg.student.net)(cfg, system, teacher)
