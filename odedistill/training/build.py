"""Build the objects a validated config describes: system, teacher, student, scheme, optimiser."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odedistill.distances import Distance, make_distance
from odedistill.errors import UserError
from odedistill.grids import make_grid
from odedistill.models.boundary import BoundaryTrajectory
from odedistill.models.nets import MLP, SmallUNet
from odedistill.schemes import ResidualScheme, make_scheme
from odedistill.systems.base import ODESystem
from odedistill.systems.linear import LinearODE
from odedistill.systems.pendulum import DampedPendulum
from odedistill.systems.probability_flow import ProbabilityFlowODE
from odedistill.teachers.gaussian_mixture import digits_mixture, grid_mixture, ring_mixture
from odedistill.training.config import Config


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; an unavailable CUDA device is a ``UserError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(
            f"'run.device' = {name!r} is not a device; use 'auto', 'cpu' or 'cuda'"
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "'run.device' asks for CUDA but no GPU is available; set run.device = 'cpu'"
        )
    return device


EDM_PRETRAINED_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"

#: EDM's released network configurations (Karras et al. 2022, App. F.2; EDM's train.py)
EDM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ddpmpp": dict(
        img_resolution=32,
        label_dim=0,
        model_type="SongUNet",
        embedding_type="positional",
        encoder_type="standard",
        decoder_type="standard",
        channel_mult_noise=1,
        resample_filter=[1, 1],
        model_channels=128,
        channel_mult=[2, 2, 2],
        num_blocks=4,
        attn_resolutions=[16],
        augment_dim=9,
        dropout=0.13,
    ),
    "ncsnpp": dict(
        img_resolution=32,
        label_dim=0,
        model_type="SongUNet",
        embedding_type="fourier",
        encoder_type="residual",
        decoder_type="standard",
        channel_mult_noise=2,
        resample_filter=[1, 3, 3, 1],
        model_channels=128,
        channel_mult=[2, 2, 2],
        num_blocks=4,
        attn_resolutions=[16],
        augment_dim=9,
        dropout=0.13,
    ),
    "adm": dict(
        img_resolution=64,
        label_dim=1000,
        model_type="DhariwalUNet",
        model_channels=192,
        channel_mult=[1, 2, 3, 4],
        num_blocks=3,
        attn_resolutions=[32, 16, 8],
        augment_dim=0,
        dropout=0.1,
    ),
}


def edm_architecture(
    arch: str,
    img_resolution: int = 0,
    label_dim: int = -1,
    model_channels: int = 0,
    channel_mult: list[int] | None = None,
    num_blocks: int = 0,
) -> dict[str, Any]:
    """``EDMPrecond`` keyword arguments of EDM's configuration ``arch``, optionally shrunk.

    Zero (or -1, or an empty list) keeps the configuration's value. A different image size
    keeps attention at the same fractions of it (16 of 32 becomes 4 of 8).
    """
    if arch not in EDM_ARCHITECTURES:
        raise UserError(
            f"unknown EDM architecture {arch!r}; expected {', '.join(EDM_ARCHITECTURES)}"
        )
    kw = dict(EDM_ARCHITECTURES[arch])
    native = kw["img_resolution"]
    res = img_resolution or native
    if res != native:
        kw["attn_resolutions"] = [a * res // native for a in kw["attn_resolutions"]]
    kw["img_resolution"] = res
    kw["img_channels"] = 3
    kw["label_dim"] = kw["label_dim"] if label_dim < 0 else label_dim
    kw["model_channels"] = model_channels or kw["model_channels"]
    kw["channel_mult"] = list(channel_mult or kw["channel_mult"])
    kw["num_blocks"] = num_blocks or kw["num_blocks"]
    if res % 2 ** (len(kw["channel_mult"]) - 1):
        raise UserError(
            f"an image of {res} pixels does not halve {len(kw['channel_mult']) - 1} times; "
            "change teacher.img_resolution or teacher.channel_mult"
        )
    return kw


def random_edm_teacher(kwargs: dict[str, Any], device: torch.device) -> nn.Module:
    """An untrained ``EDMPrecond`` built from ``kwargs`` (global RNG), eval mode, no gradients."""
    from odedistill.teachers.precond import EDMPrecond

    D = EDMPrecond(**kwargs)
    D.init_kwargs = dict(kwargs)  # lets a student of the same architecture be built
    return D.to(device).eval().requires_grad_(False)


def build_teacher(cfg: Config, device: torch.device) -> tuple[nn.Module, tuple[int, ...], int]:
    """The teacher denoiser on ``device``, the state shape and the label dimension."""
    t = cfg.teacher
    if t.kind == "gaussian_mixture":
        if t.preset == "ring":
            D = ring_mixture(t.modes, t.radius, t.std)
        elif t.preset == "grid":
            D = grid_mixture(t.modes, t.radius, t.std)
        else:
            D = digits_mixture(t.count, t.std)
        return D.to(device), D.state_shape, 0
    if t.kind == "edm_random":
        kw = edm_architecture(
            t.arch, t.img_resolution, t.label_dim, t.model_channels, t.channel_mult, t.num_blocks
        )
        D = random_edm_teacher(kw, device)
        return D, (D.img_channels, D.img_resolution, D.img_resolution), D.label_dim
    from odedistill.teachers import load_teacher

    path = Path(t.path)
    if not path.is_file():
        raise UserError(
            f"teacher checkpoint not found: {path}; download the EDM checkpoint it names from "
            f"{EDM_PRETRAINED_URL}{path.stem}.pkl (or convert one with 'odedistill convert') and "
            "set teacher.path; see docs/scale.md"
        )
    D = load_teacher(path, device)
    return D, (D.img_channels, D.img_resolution, D.img_resolution), D.label_dim


def build_system(cfg: Config, device: torch.device) -> ODESystem:
    """The ODE the recipe distils, with its teacher on ``device``."""
    if cfg.system.kind == "linear":
        return LinearODE()
    if cfg.system.kind == "pendulum":
        return DampedPendulum()
    D, shape, label_dim = build_teacher(cfg, device)
    D = D.eval().requires_grad_(False)
    s = cfg.system
    return ProbabilityFlowODE(D, shape, s.t_max, s.t_min, s.sigma_data, label_dim)


def _without_dropout(net: nn.Module, p: float) -> nn.Module:
    """Set the dropout rate of EDM blocks (a float attribute 'dropout') to ``p``."""
    for m in net.modules():
        if isinstance(getattr(m, "dropout", None), float):
            m.dropout = p
    return net


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


def build_network(cfg: Config, system: ODESystem) -> nn.Module:
    """The student's raw network F for the system's state shape."""
    st = cfg.student
    teacher = getattr(system, "denoiser", None)
    if st.net == "teacher" or st.init == "teacher":
        if st.net != "teacher":
            raise UserError("student.init = 'teacher' needs student.net = 'teacher'")
        if teacher is None or not isinstance(getattr(teacher, "model", None), nn.Module):
            raise UserError(
                "student.net = 'teacher' copies the teacher's raw network, which only an EDM "
                "teacher has (teacher.kind = 'edm' or 'edm_random'); use student.net = 'mlp' or "
                "'unet'"
            )
        net = copy.deepcopy(teacher.model)
        if st.init == "random":
            from odedistill.teachers.precond import build_network as build_edm

            fresh = build_edm(type(teacher).__name__, teacher.init_kwargs).model
            net = fresh.to(next(net.parameters()).device)
        net = _without_dropout(net, st.dropout).train().requires_grad_(True)
        return _without_augment(net)
    if st.net == "mlp":
        return MLP(system.state_shape, st.width, st.depth, system.label_dim)
    if not system.is_image:
        raise UserError(
            f"student.net = 'unet' needs image states (C, H, W), but the system's states have "
            f"shape {system.state_shape}; use student.net = 'mlp'"
        )
    return SmallUNet(
        system.state_shape,
        st.channels,
        tuple(st.channel_mult),
        st.blocks,
        st.attention,
        label_dim=system.label_dim,
    )


def build_student(cfg: Config, system: ODESystem) -> BoundaryTrajectory:
    return BoundaryTrajectory.for_system(build_network(cfg, system), system)


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
    return cls(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
