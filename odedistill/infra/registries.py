"""What a recipe's ``system.kind``, ``teacher.kind`` and ``student.net`` name: builders from the config.

Each registry maps a name to a builder that reads the config sections it needs. The residual
schemes, grids and distances have registries of their own beside their implementations
(``odedistill.schemes.SCHEMES``, ``odedistill.grids.GRIDS``, ``odedistill.distances.DISTANCES``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.infra.user_systems import SystemKind, SystemRegistry, Teacher, construct
from odedistill.models.boundary import default_parametrisation
from odedistill.models.nets import MLP, SmallUNet
from odedistill.models.parametrisation import Parametrisation, UnitTime
from odedistill.registry import Registry
from odedistill.systems.base import ODESystem
from odedistill.systems.flow_matching import FlowMatchingODE
from odedistill.systems.linear import LinearODE
from odedistill.systems.pendulum import DampedPendulum
from odedistill.systems.probability_flow import ProbabilityFlowODE
from odedistill.systems.scale import input_statistics
from odedistill.teachers.architectures import (
    EDM_PRETRAINED_URL,
    edm_architecture,
    random_edm_teacher,
)
from odedistill.teachers.diffusers import DiffusersDenoiser, DiffusersUNet
from odedistill.teachers.diffusers_load import load_diffusers_teacher
from odedistill.teachers.gaussian_mixture import (
    GaussianMixtureDenoiser,
    GaussianMixtureVelocity,
    digits_mixture,
    grid_mixture,
    ring_mixture,
)
from odedistill.teachers.load import load_teacher
from odedistill.teachers.networks import NETWORKS as EDM_NETWORKS

TEACHER_NETWORKS: dict[str, type[nn.Module]] = {**EDM_NETWORKS, "DiffusersUNet": DiffusersUNet}
"""The raw networks of teachers a student can copy, by the preconditioner's ``model_type``."""

#: the validated recipe that the builders read (``odedistill.infra.config.Config``); that module
#: imports these registries (its fields' choices), so they name its type without importing it
Config = Any

# ------------------------------------------------------------------------------- teachers
TEACHERS: Registry[Callable[[Config, torch.device], Teacher]] = Registry("teacher")


def _mixture(cfg: Config, device: torch.device) -> Teacher:
    t = cfg.teacher
    if t.preset == "ring":
        D = ring_mixture(t.modes, t.radius, t.std)
    elif t.preset == "grid":
        D = grid_mixture(t.modes, t.radius, t.std)
    else:
        D = digits_mixture(t.count, t.std)
    return Teacher(D.to(device), D.state_shape, 0)


def _edm_shapes(D: nn.Module) -> Teacher:
    return Teacher(D, (D.img_channels, D.img_resolution, D.img_resolution), D.label_dim)


def _edm_checkpoint(cfg: Config, device: torch.device) -> Teacher:
    path = Path(cfg.teacher.path)
    if not path.is_file():
        raise UserError(
            f"teacher checkpoint not found: {path}; download the EDM checkpoint it names from "
            f"{EDM_PRETRAINED_URL}{path.stem}.pkl (or convert one with 'odedistill convert') and "
            "set teacher.path; see docs/scale.md"
        )
    return _edm_shapes(load_teacher(path, device))


def _edm_random(cfg: Config, device: torch.device) -> Teacher:
    t = cfg.teacher
    kw = edm_architecture(
        t.arch, t.img_resolution, t.label_dim, t.model_channels, t.channel_mult, t.num_blocks
    )
    return _edm_shapes(random_edm_teacher(kw, device))


def _diffusers(cfg: Config, device: torch.device) -> Teacher:
    D = load_diffusers_teacher(Path(cfg.teacher.path), device)
    check_schedule_range(D, cfg.system.t_min, cfg.system.t_max)
    return Teacher(D, D.state_shape, D.label_dim)


def check_schedule_range(D: DiffusersDenoiser, t_min: float, t_max: float) -> None:
    """The probability-flow ODE's interval must lie in the schedule's [σ_0, σ_{N−1}] (to 1e-3).

    Outside it the network's time input would be clamped to the first or last timestep.
    """
    lo, hi = D.sigma_min, D.sigma_max
    if t_min < lo * (1 - 1e-3) or t_max > hi * (1 + 1e-3):
        raise UserError(
            f"system.t_min = {t_min:g} and system.t_max = {t_max:g} must lie in the diffusers "
            f"schedule's noise range [{lo:.6g}, {hi:.6g}] (sigma of timesteps 0 and "
            f"{len(D.sigmas) - 1}); set system.t_min and system.t_max inside it"
        )


TEACHERS.register(
    "gaussian_mixture",
    _mixture,
    help="exact denoiser of a Gaussian mixture (teacher.preset); with system.kind = "
    "'flow_matching', its exact flow-matching velocity",
)
TEACHERS.register("edm", _edm_checkpoint, help="an EDM checkpoint .pkl or converted .safetensors")
TEACHERS.register(
    "diffusers",
    _diffusers,
    help="a DDPM-style UNet2DModel and its scheduler saved by diffusers' save_pretrained "
    "(teacher.path: a folder, or a Hugging Face Hub id in the local cache; pip install -e '.[diffusers]')",
)
TEACHERS.register(
    "edm_random",
    _edm_random,
    help="an untrained EDM network of architecture teacher.arch: a stand-in for tests and "
    "benchmarks",
)


def build_teacher(cfg: Config, device: torch.device) -> Teacher:
    """The recipe's teacher on ``device``, in eval mode with gradients off."""
    teacher = TEACHERS.get(cfg.teacher.kind)(cfg, device)
    teacher.denoiser.eval().requires_grad_(False)
    return teacher


# -------------------------------------------------------------------------------- systems
SYSTEMS = SystemRegistry("system")


def _probability_flow(cfg: Config, teacher: Teacher | None) -> ODESystem:
    assert teacher is not None
    s = cfg.system
    return ProbabilityFlowODE(
        teacher.denoiser, teacher.state_shape, s.t_max, s.t_min, s.sigma_data, teacher.label_dim
    )


SYSTEMS.register(
    "probability_flow",
    SystemKind(_probability_flow, needs_teacher=True),
    help="of the teacher's denoiser, from system.t_max down to system.t_min",
)


def _flow_matching(cfg: Config, teacher: Teacher | None) -> ODESystem:
    assert teacher is not None
    D, s = teacher.denoiser, cfg.system
    if D is not None and not isinstance(D, GaussianMixtureDenoiser):
        raise UserError(
            f"system.kind = 'flow_matching' needs a flow-matching velocity, which "
            f"teacher.kind = 'gaussian_mixture' gives (exactly); teacher.kind = "
            f"'{cfg.teacher.kind}' is a denoiser: use system.kind = 'probability_flow'"
        )
    velocity = None if D is None else GaussianMixtureVelocity(D)
    return FlowMatchingODE(velocity, teacher.state_shape, s.t_max, s.t_min, teacher.label_dim)


SYSTEMS.register(
    "flow_matching",
    SystemKind(_flow_matching, needs_teacher=True),
    help="the rectified-flow ODE x_t = (1 - t) x0 + t eps of the teacher's velocity, from "
    "system.t_max (<= 1) down to system.t_min (>= 0)",
)
SYSTEMS.register(
    "linear",
    SystemKind(lambda cfg, teacher: construct(LinearODE, cfg.system.args, "'linear'", True)),
    help="LinearODE, a decaying spiral",
)
SYSTEMS.register(
    "pendulum",
    SystemKind(lambda cfg, teacher: construct(DampedPendulum, cfg.system.args, "'pendulum'", True)),
    help="DampedPendulum",
)


def build_system(cfg: Config, device: torch.device, teacher: Teacher | None = None) -> ODESystem:
    """The ODE the recipe distils; builds its teacher on ``device`` when it needs one.

    ``teacher`` overrides that (a shapes-only ``Teacher`` rebuilds a system without its teacher).
    """
    kind = SYSTEMS.get(cfg.system.kind)
    if cfg.system.args and kind.needs_teacher:
        raise UserError(
            f"system.args is for a 'module:ClassName', 'pendulum' or 'linear' system, not "
            f"{cfg.system.kind!r}; its settings are system.t_max, system.t_min and [teacher]"
        )
    if kind.needs_teacher and teacher is None:
        teacher = build_teacher(cfg, device)
    return kind.build(cfg, teacher)


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


def _two_times(cfg: Config) -> dict[str, bool]:
    """The constructor keyword of a flow map's second time input (none for a PID student, so
    its stored arguments stay those of the one-time network)."""
    return {"two_times": True} if cfg.student.kind == "flowmap" else {}


def _mlp(cfg: Config, system: ODESystem, teacher: Teacher | None) -> StudentNet:
    st = cfg.student
    kwargs: dict[str, Any] = dict(
        state_shape=list(system.state_shape),
        width=st.width,
        depth=st.depth,
        label_dim=system.label_dim,
        **_two_times(cfg),
    )
    param = None
    if st.time == "unit":
        kwargs["max_freq"] = 16.0
        base = default_parametrisation(system)
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
        **_two_times(cfg),
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


def _with_dropout(net: nn.Module, p: float) -> nn.Module:
    """Set the dropout rate of every block: a diffusers UNet's ``nn.Dropout`` modules, or the
    float ``dropout`` attribute of EDM's blocks."""
    if isinstance(net, DiffusersUNet):
        net.set_dropout(p)
        return net
    for m in net.modules():
        if isinstance(getattr(m, "dropout", None), float):
            m.dropout = p
    return net


def _teacher_copy(cfg: Config, system: ODESystem, teacher: Teacher | None) -> StudentNet:
    """The teacher's raw network (or a fresh one of its architecture), fed as the teacher feeds it."""
    st = cfg.student
    D = None if teacher is None else teacher.denoiser
    if D is None or getattr(D, "model_type", None) not in TEACHER_NETWORKS:
        raise UserError(
            "student.net = 'teacher' copies the teacher's raw network, which only an EDM or "
            "diffusers teacher has (teacher.kind = 'edm', 'edm_random' or 'diffusers'); use "
            "student.net = 'mlp' or 'unet'"
        )
    if _two_times(cfg) and D.model_type not in EDM_NETWORKS:
        raise UserError(
            f"student.kind = 'flowmap' needs a second time input, which the {D.model_type} "
            "copy does not have; use an EDM teacher, or student.net = 'unet' with this teacher"
        )
    kwargs = {**D.model_kwargs, "dropout": st.dropout, **_two_times(cfg)}
    device = next(D.model.parameters()).device
    if st.init == "teacher" and not _two_times(cfg):
        net = copy.deepcopy(D.model)
    elif st.init == "teacher":  # the teacher's weights, and a source-time branch that starts at 0
        net = EDM_NETWORKS[D.model_type](**D.model_kwargs, two_times=True).to(device)
        missing, unexpected = net.load_state_dict(D.model.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("second_time.") for k in missing)
    else:
        fresh = TEACHER_NETWORKS[D.model_type](**kwargs)  # what a checkpoint rebuilds
        net = fresh.to(device)
    net = _with_dropout(net, st.dropout)  # the student's dropout rate (PID: 0)
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
