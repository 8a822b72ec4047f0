"""Preconditioned denoisers D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise) (EDM, Table 1).

``EDMPrecond``, ``VPPrecond`` and ``VEPrecond`` wrap a raw network (``self.model``) with the
coefficients of EDM, VP (Song et al. 2021, DDPM++ schedule) and VE (NCSN++ schedule). Their
constructor keywords are those stored in EDM's pickles, so ``build_edm_module`` can rebuild a
released checkpoint's module tree from its ``_init_kwargs`` and load its state dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from odedistill.errors import UserError
from odedistill.models.parametrisation import (
    ConstantScale,
    EDMNoise,
    Parametrisation,
    RootScale,
    SkipScaling,
    VENoise,
    VPNoise,
)
from odedistill.schedules import vp_sigma, vp_sigma_inv
from odedistill.teachers.networks import NETWORKS

__all__ = [
    "EDMPrecond",
    "PRECONDS",
    "PrecondCoefficients",
    "VEPrecond",
    "VPPrecond",
    "build_edm_module",
    "edm_coefficients",
    "ve_coefficients",
    "vp_coefficients",
    "vp_sigma",
    "vp_sigma_inv",
]


class PrecondCoefficients(NamedTuple):
    """The four preconditioning functions of EDM Table 1, evaluated at σ."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def edm_coefficients(sigma: Tensor, sigma_data: float = 0.5) -> PrecondCoefficients:
    """EDM: c_skip = σ_d²/(σ²+σ_d²), c_out = σσ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²), c_noise = lnσ/4.

    (Karras et al. 2022, Table 1; σ_d = ``sigma_data``.)
    """
    sigma = torch.as_tensor(sigma)
    total = sigma**2 + sigma_data**2
    return PrecondCoefficients(
        c_skip=sigma_data**2 / total,
        c_out=sigma * sigma_data / total.sqrt(),
        c_in=1 / total.sqrt(),
        c_noise=EDMNoise()(sigma),
    )


def vp_coefficients(
    sigma: Tensor, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000
) -> PrecondCoefficients:
    """VP: c_skip = 1, c_out = −σ, c_in = 1/√(σ²+1), c_noise = (M−1)·t_VP(σ)."""
    sigma = torch.as_tensor(sigma)
    return PrecondCoefficients(
        c_skip=torch.ones_like(sigma),
        c_out=-sigma,
        c_in=1 / (sigma**2 + 1).sqrt(),
        c_noise=VPNoise(beta_d, beta_min, M)(sigma),
    )


def ve_coefficients(sigma: Tensor) -> PrecondCoefficients:
    """VE: c_skip = 1, c_out = σ, c_in = 1, c_noise = ln(σ/2)."""
    sigma = torch.as_tensor(sigma)
    return PrecondCoefficients(
        c_skip=torch.ones_like(sigma),
        c_out=sigma,
        c_in=torch.ones_like(sigma),
        c_noise=VENoise()(sigma),
    )


def _build_model(model_type: str, **kwargs: Any) -> nn.Module:
    if model_type not in NETWORKS:
        raise UserError(
            f"unknown EDM model_type {model_type!r}; expected one of {', '.join(NETWORKS)}"
        )
    return NETWORKS[model_type](**kwargs)


class _Precond(nn.Module):
    """Shared forward of the preconditioners: D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise)."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int,
        use_fp16: bool,
        model_type: str,
        model_kwargs: dict[str, Any],
    ) -> None:
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        #: the raw network's class and constructor arguments (what rebuilds a copy of it)
        self.model_type = model_type
        self.model_kwargs = dict(
            img_resolution=img_resolution,
            in_channels=img_channels,
            out_channels=img_channels,
            label_dim=label_dim,
            **model_kwargs,
        )
        self.model = _build_model(model_type, **self.model_kwargs)

    def coefficients(self, sigma: Tensor) -> PrecondCoefficients:
        raise NotImplementedError

    def parametrisation(self) -> Parametrisation:
        """What a student copying ``self.model`` must feed it: this preconditioner's c_in and
        c_noise, anchored at σ = 0 (the denoised image)."""
        raise NotImplementedError

    def skip_scaling(self) -> SkipScaling:
        """This preconditioner's c_skip and c_out by numbers (a flow map's skip term)."""
        raise NotImplementedError

    def forward(
        self,
        x: Tensor,
        sigma: Tensor | float,
        class_labels: Tensor | None = None,
        force_fp32: bool = False,
        **model_kwargs: Any,
    ) -> Tensor:
        """D(x; σ) for x (B, C, H, W) and σ a scalar or (B,); float64 inputs stay float64."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = x.to(dtype)
        sigma = torch.as_tensor(sigma, device=x.device).to(dtype).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"sigma has {sigma.shape[0]} entries for a batch of {x.shape[0]}")
        if self.label_dim == 0:
            class_labels = None
        elif class_labels is None:
            class_labels = torch.zeros(x.shape[0], self.label_dim, dtype=dtype, device=x.device)
        else:
            class_labels = class_labels.to(dtype).reshape(-1, self.label_dim)
        use_half = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        net_dtype = torch.float16 if use_half else dtype

        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in (c_skip, c_out, c_in))
        F_x = self.model(
            (c_in * x).to(net_dtype), c_noise, class_labels=class_labels, **model_kwargs
        )
        return c_skip * x + c_out * F_x.to(dtype)

    def round_sigma(self, sigma: Tensor | float) -> Tensor:
        """Continuous-time preconditioners accept every σ: the identity."""
        return torch.as_tensor(sigma)


class EDMPrecond(_Precond):
    """EDM preconditioning (Karras et al. 2022, Table 1, right column)."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        sigma_min: float = 0.0,
        sigma_max: float = float("inf"),
        sigma_data: float = 0.5,
        model_type: str = "DhariwalUNet",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(
            img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs
        )
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data

    def coefficients(self, sigma: Tensor) -> PrecondCoefficients:
        return edm_coefficients(sigma, self.sigma_data)

    def parametrisation(self) -> Parametrisation:
        return Parametrisation(0.0, RootScale(self.sigma_data), EDMNoise())

    def skip_scaling(self) -> SkipScaling:
        return SkipScaling.edm(self.sigma_data)


class VPPrecond(_Precond):
    """VP preconditioning (Song et al. 2021 as in Karras et al. 2022, Table 1, VP column)."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        beta_d: float = 19.9,
        beta_min: float = 0.1,
        M: int = 1000,
        epsilon_t: float = 1e-5,
        model_type: str = "SongUNet",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(
            img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs
        )
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.M = M
        self.epsilon_t = epsilon_t
        # Plain floats (not tensors), so that building on the meta device works.
        self.sigma_min = math.sqrt(math.expm1(0.5 * beta_d * epsilon_t**2 + beta_min * epsilon_t))
        self.sigma_max = math.sqrt(math.expm1(0.5 * beta_d + beta_min))

    def coefficients(self, sigma: Tensor) -> PrecondCoefficients:
        return vp_coefficients(sigma, self.beta_d, self.beta_min, self.M)

    def parametrisation(self) -> Parametrisation:
        return Parametrisation(0.0, RootScale(1.0), VPNoise(self.beta_d, self.beta_min, self.M))

    def skip_scaling(self) -> SkipScaling:
        return SkipScaling.linear(-1.0)

    def sigma(self, t: Tensor | float) -> Tensor:
        """σ(t) of this VP schedule."""
        return vp_sigma(t, self.beta_d, self.beta_min)

    def sigma_inv(self, sigma: Tensor | float) -> Tensor:
        """t(σ) of this VP schedule."""
        return vp_sigma_inv(sigma, self.beta_d, self.beta_min)


class VEPrecond(_Precond):
    """VE preconditioning (Song et al. 2021 as in Karras et al. 2022, Table 1, VE column)."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        sigma_min: float = 0.02,
        sigma_max: float = 100.0,
        model_type: str = "SongUNet",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(
            img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs
        )
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def coefficients(self, sigma: Tensor) -> PrecondCoefficients:
        return ve_coefficients(sigma)

    def parametrisation(self) -> Parametrisation:
        return Parametrisation(0.0, ConstantScale(1.0), VENoise())

    def skip_scaling(self) -> SkipScaling:
        return SkipScaling.linear(1.0)


PRECONDS: dict[str, type[nn.Module]] = {
    "EDMPrecond": EDMPrecond,
    "VPPrecond": VPPrecond,
    "VEPrecond": VEPrecond,
}
"""Preconditioners by the class name stored in EDM pickles."""


def build_edm_module(
    class_name: str, init_kwargs: Mapping[str, Any], init_args: Sequence[Any] = ()
) -> nn.Module:
    """Rebuild an EDM module from a pickle's class name (bare or dotted) and constructor args."""
    short = class_name.rsplit(".", 1)[-1]
    registry = {**PRECONDS, **NETWORKS}
    if short not in registry:
        raise UserError(
            f"unsupported EDM network class {class_name!r}; supported: {', '.join(registry)}"
        )
    try:
        return registry[short](*init_args, **dict(init_kwargs))
    except (TypeError, ValueError, ArithmeticError, IndexError, KeyError, AttributeError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"cannot build {short} from the checkpoint's arguments: {message}") from err
