"""DDPM-style teachers from diffusers as EDM denoisers: σ = √((1−ᾱ)/ᾱ), D = c_skip·x + c_out·F(x/√(1+σ²), t(σ)).

A discrete-time model is trained on x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, t = 0 … N−1, with
ᾱ_t = ∏_{s≤t}(1 − β_s). Dividing by √ᾱ_t puts it in EDM form, x = x_t/√ᾱ_t = x_0 + σ_t·ε
with σ_t = √((1−ᾱ_t)/ᾱ_t), and the network's prediction becomes a denoiser
D(x; σ) ≈ E[x_0 | x] (Karras et al. 2022, Table 1, "VP" with a discrete schedule):

    input        x_t = c_in(σ)·x,  c_in = 1/√(1+σ²) = √ᾱ
    ε-prediction D = x − σ·ε̂                              (c_skip = 1,        c_out = −σ)
    v-prediction ε̂ = √ᾱ·v̂ + √(1−ᾱ)·x_t, so D = x/(1+σ²) − σ/√(1+σ²)·v̂
                                                           (c_skip = 1/(1+σ²), c_out = −σ/√(1+σ²))
    x₀-prediction D = x̂₀                                   (c_skip = 0,        c_out = 1)

A continuous σ maps to a fractional timestep t(σ) by linear interpolation in ln σ between
neighbouring training timesteps (as k-diffusion's discrete-schedule wrappers do); it is exact
at the schedule's own σ_t and clamps to [0, N−1] outside the schedule. Deterministic DDIM
(η = 0) is then explicit Euler on dx/dσ = (x − D(x; σ))/σ at the σ of its timesteps.

A student copied from such a teacher feeds the copied UNet what the teacher feeds it
(``DiffusersDenoiser.parametrisation()``: c_in = 1/√(1+σ²) at T and the timestep map as a
table of numbers), and is rebuilt from the UNet's JSON config alone (``DiffusersUNet(config)``).

diffusers is an optional dependency (``pip install -e '.[diffusers]'``); it is imported
only where a UNet is built or loaded. Loading reads ``.safetensors`` only: pickled ``.bin``
weights are refused, because unpickling can run code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from odedistill._tensor import per_sample
from odedistill.errors import UserError
from odedistill.parametrisation import DiscreteTimesteps, Parametrisation, RootScale, SkipScaling
from odedistill.teachers.precond import PrecondCoefficients

__all__ = [
    "DiffusersDenoiser",
    "DiffusersUNet",
    "alphas_cumprod",
    "import_diffusers",
    "unet_config",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
MAX_TIMESTEPS = 100_000
_INSTALL = "install it with: pip install -e '.[diffusers]'"


def import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as e:
        raise UserError(f"DDPM-style teachers need the 'diffusers' package; {_INSTALL}") from e
    return diffusers


# ------------------------------------------------------------------------- the schedule
def alphas_cumprod(config: Mapping[str, Any]) -> Tensor:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), t = 0 … N−1, in float64, from a diffusers scheduler config.

    With u_t = t/(N−1) and β₀ = ``beta_start``, β₁ = ``beta_end``:

        linear             β_t = β₀ + u_t·(β₁ − β₀)
        scaled_linear      β_t = (√β₀ + u_t·(√β₁ − √β₀))²
        squaredcos_cap_v2  β_t = min(1 − f((t+1)/N)/f(t/N), 0.999),  f(u) = cos²((u + 0.008)/1.008 · π/2)
        sigmoid            β_t = β₀ + (β₁ − β₀)·s(12·u_t − 6),  s the logistic function

    or the config's ``trained_betas``. These are the formulas of diffusers' DDPM and DDIM
    schedulers (which compute them in float32). A zero-terminal-SNR rescale
    (``rescale_betas_zero_snr``) makes σ_{N−1} infinite and is refused.
    """
    if config.get("rescale_betas_zero_snr"):
        raise UserError(
            "the scheduler sets rescale_betas_zero_snr, which gives ᾱ = 0 (σ = ∞) at the last "
            "timestep; the probability-flow ODE needs a finite σ_max: use a schedule without it"
        )
    n = int(config.get("num_train_timesteps", 1000))
    if not 2 <= n <= MAX_TIMESTEPS:
        raise UserError(
            f"num_train_timesteps = {n} in the scheduler config; expected 2 to {MAX_TIMESTEPS}"
        )
    if config.get("trained_betas") is not None:
        betas = torch.as_tensor(config["trained_betas"], dtype=torch.float64).reshape(-1)
    else:
        b0 = float(config.get("beta_start", 0.0001))
        b1 = float(config.get("beta_end", 0.02))
        u = torch.linspace(0, 1, n, dtype=torch.float64)
        kind = config.get("beta_schedule", "linear")
        if kind == "linear":
            betas = b0 + u * (b1 - b0)
        elif kind == "scaled_linear":
            betas = (math.sqrt(b0) + u * (math.sqrt(b1) - math.sqrt(b0))) ** 2
        elif kind == "squaredcos_cap_v2":
            s = torch.arange(n + 1, dtype=torch.float64) / n
            f = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp_max(0.999)
        elif kind == "sigmoid":
            betas = b0 + (b1 - b0) * torch.sigmoid(12 * u - 6)
        else:
            raise UserError(
                f"unsupported beta_schedule {kind!r} in the scheduler config; supported: "
                f"{', '.join(BETA_SCHEDULES)}, or trained_betas"
            )
    if betas.ndim != 1 or len(betas) < 2 or not ((betas > 0) & (betas < 1)).all():
        raise UserError("the scheduler's betas must be at least two numbers in (0, 1)")
    return torch.cumprod(1 - betas, dim=0)


# -------------------------------------------------------------------- the raw network F
def unet_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A ``UNet2DModel`` config as plain JSON values, without diffusers' private ``_`` keys."""
    public = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    try:
        return json.loads(json.dumps(public))
    except (TypeError, ValueError) as e:
        raise UserError(f"the UNet config is not plain JSON ({e})") from None


def _contiguous_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """GroupNorm's input made contiguous (free when it is): torch's forward-mode rule for
    group_norm fails on the strided tangents that diffusers' attention reshapes leave behind,
    which the autodiff residual scheme (``torch.func.jvp``) would hit."""
    return (args[0].contiguous(), *args[1:])


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` with EDM networks' call convention: F(x, c_noise, class_labels).

    ``c_noise`` is the (fractional) timestep, one per sample; one-hot ``class_labels`` (B, K)
    become the integer labels of a ``num_class_embeds`` UNet; other class embeddings receive
    the labels as given. A UNet that predicts a learned variance as well (2C output channels)
    returns its first C channels. A copy of this module is what a student initialised from the
    teacher trains.

    Args:
        config: the UNet's config (``unet.config``, or its JSON): with no ``unet``, a fresh
            ``UNet2DModel.from_config(config)`` is built. This is how a student checkpoint
            rebuilds its network: from numbers and names only, running no code from a file.
        dropout: overrides the config's dropout rate (every ``nn.Dropout`` of the UNet).
        unet: an existing ``UNet2DModel`` to wrap (its config must be ``config``).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        dropout: float | None = None,
        *,
        unet: nn.Module | None = None,
    ) -> None:
        super().__init__()
        cfg = unet_config(config)
        if dropout is not None:
            cfg["dropout"] = float(dropout)
        if cfg.get("time_embedding_type", "positional") != "positional":
            raise UserError(
                f"the UNet's time_embedding_type is {cfg['time_embedding_type']!r}; only "
                "'positional' accepts the fractional timesteps a continuous σ needs"
            )
        if unet is None:
            unet = import_diffusers().UNet2DModel.from_config(cfg)
        #: the UNet's config as JSON: what rebuilds this network
        self.config = cfg
        self.unet = unet
        if dropout is not None:
            self.set_dropout(dropout)
        for m in unet.modules():
            if isinstance(m, nn.GroupNorm):
                m.register_forward_pre_hook(_contiguous_input)
        cfg = unet.config
        self.in_channels = int(cfg["in_channels"])
        self.class_embedded = getattr(unet, "class_embedding", None) is not None
        self.label_dim = int(cfg.get("num_class_embeds") or 0) if self.class_embedded else 0
        self.integer_labels = self.class_embedded and cfg.get("class_embed_type") is None

    def set_dropout(self, p: float) -> None:
        """Set the rate of every ``nn.Dropout`` of the UNet, and the config's ``dropout``, to p."""
        self.config["dropout"] = float(p)
        for m in self.unet.modules():
            if isinstance(m, nn.Dropout):
                m.p = float(p)

    @classmethod
    def wrap(cls, unet: nn.Module) -> DiffusersUNet:
        """Wrap an existing ``UNet2DModel`` (keeping its weights)."""
        return cls(unet.config, unet=unet)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the UNet was built for (``sample_size``)."""
        size = self.unet.config.get("sample_size")
        if size is None:
            raise UserError("the UNet config has no sample_size; the image size is unknown")
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (self.in_channels, int(h), int(w))

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        labels = None
        if self.class_embedded:
            if class_labels is None:
                raise UserError(
                    "this UNet is class-conditional: give class_labels (one-hot (B, K) or "
                    "integer (B,)), e.g. ProbabilityFlowODE(..., label_dim=teacher.label_dim)"
                )
            labels = class_labels
            if self.integer_labels and labels.ndim == 2:
                if (labels.sum(dim=1) != 1).any():  # e.g. EDM's all-zero "no label" rows
                    raise UserError(
                        "this UNet embeds integer classes: give one-hot rows (exactly one 1) "
                        "or integer labels, not zero or mixed rows"
                    )
                labels = labels.argmax(dim=1)
            if self.integer_labels:
                labels = labels.long()
        out = self.unet(x, c_noise, class_labels=labels, return_dict=False)[0]
        if out.shape[1] == 2 * self.in_channels:  # learned variance: ε or v, then the variance
            out = out[:, : self.in_channels]
        return out


# --------------------------------------------------------------------- the denoiser D
class DiffusersDenoiser(nn.Module):
    """D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)) for a discrete-schedule network.

    c_in(σ) = 1/√(1+σ²), c_noise(σ) = the fractional timestep t(σ), and (c_skip, c_out) are
    (1, −σ) for ε-prediction, (1/(1+σ²), −σ/√(1+σ²)) for v-prediction, (0, 1) for x₀-prediction.
    σ_t = √((1−ᾱ_t)/ᾱ_t) on the training timesteps; t(σ) interpolates t linearly in ln σ.

    Args:
        unet: a diffusers ``UNet2DModel`` (or an already wrapped :class:`DiffusersUNet`).
        alphas_cumprod: ᾱ_t for t = 0 … N−1 (see :func:`alphas_cumprod`).
        prediction_type: ``'epsilon'``, ``'v_prediction'`` or ``'sample'`` (diffusers' names).

    Attributes:
        model: the raw network F as a :class:`DiffusersUNet`.
        sigmas: σ_t, t = 0 … N−1 (float64 buffer, increasing).
        label_dim: the number of classes of a ``num_class_embeds`` UNet, else 0.
    """

    def __init__(
        self,
        unet: nn.Module,
        alphas_cumprod: Tensor,
        prediction_type: str = "epsilon",
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise UserError(
                f"unsupported prediction_type {prediction_type!r}; supported: "
                f"{', '.join(PREDICTION_TYPES)}"
            )
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if len(ab) < 2 or not ((ab > 0) & (ab < 1)).all():
            raise UserError("alphas_cumprod must hold at least two values in (0, 1)")
        sigmas = ((1 - ab) / ab).sqrt()
        if not (sigmas[1:] > sigmas[:-1]).all():
            raise UserError("the schedule's σ_t = √((1−ᾱ_t)/ᾱ_t) must increase with t")
        self.model = unet if isinstance(unet, DiffusersUNet) else DiffusersUNet.wrap(unet)
        self.prediction_type = prediction_type
        #: c_noise(σ): the fractional timestep, a table of numbers (the student's time input too)
        self.timesteps = DiscreteTimesteps(sigmas.tolist())
        self.register_buffer("sigmas", sigmas)
        self.register_buffer("log_sigmas", sigmas.log())

    @classmethod
    def from_scheduler_config(
        cls, unet: nn.Module, scheduler_config: Mapping[str, Any]
    ) -> DiffusersDenoiser:
        """The denoiser of ``unet`` under a diffusers scheduler config (a dict or its JSON)."""
        return cls(
            unet,
            alphas_cumprod(scheduler_config),
            scheduler_config.get("prediction_type", "epsilon"),
        )

    # ------------------------------------------------------------- schedule maps
    @property
    def label_dim(self) -> int:
        return self.model.label_dim

    @property
    def state_shape(self) -> tuple[int, int, int]:
        return self.model.state_shape

    #: the raw network's class (a key of the student network classes) and its arguments
    model_type = "DiffusersUNet"

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {"config": self.model.config}

    def parametrisation(self) -> Parametrisation:
        """What a student copying ``self.model`` must feed it: c_in(σ) = 1/√(1+σ²) and the
        fractional timestep t(σ), anchored at σ = 0."""
        return Parametrisation(0.0, RootScale(1.0), self.timesteps)

    def skip_scaling(self) -> SkipScaling:
        """c_skip and c_out of this prediction type by numbers (``coefficients``)."""
        skips = {"epsilon": SkipScaling.linear(-1.0), "v_prediction": SkipScaling.edm(1.0, -1.0)}
        return skips.get(self.prediction_type, SkipScaling.data())

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def c_noise(self, sigma: Tensor | float) -> Tensor:
        """The fractional timestep t(σ): linear in ln σ between neighbouring σ_t (float64).

        t(σ_t) = t exactly; σ below σ_0 gives 0 and above σ_{N−1} gives N−1.
        """
        return self.timesteps(
            torch.as_tensor(sigma, dtype=torch.float64, device=self.sigmas.device)
        )

    def sigma(self, timestep: Tensor | float) -> Tensor:
        """σ at a (fractional) timestep: ln σ interpolated linearly in t; the inverse of c_noise."""
        t = torch.as_tensor(timestep, dtype=torch.float64, device=self.sigmas.device)
        last = len(self.sigmas) - 1
        t = t.clamp(0, last)
        lo = t.floor().long()
        hi = (lo + 1).clamp_max(last)
        # σ_lo·exp(w·(ln σ_hi − ln σ_lo)): exactly σ_t at integer t
        return self.sigmas[lo] * ((t - lo) * (self.log_sigmas[hi] - self.log_sigmas[lo])).exp()

    def c_in(self, sigma: Tensor | float) -> Tensor:
        """The network's input scale 1/√(1+σ²) = √ᾱ: x_t = c_in·x."""
        sigma = torch.as_tensor(sigma)
        return 1 / (1 + sigma**2).sqrt()

    def coefficients(self, sigma: Tensor) -> PrecondCoefficients:
        """(c_skip, c_out, c_in, c_noise) at σ for this model's prediction type."""
        sigma = torch.as_tensor(sigma)
        c_in = self.c_in(sigma)
        if self.prediction_type == "epsilon":
            c_skip, c_out = torch.ones_like(sigma), -sigma
        elif self.prediction_type == "v_prediction":
            c_skip, c_out = c_in**2, -sigma * c_in
        else:
            c_skip, c_out = torch.zeros_like(sigma), torch.ones_like(sigma)
        return PrecondCoefficients(c_skip, c_out, c_in, self.c_noise(sigma))

    # ------------------------------------------------------------------- forward
    def forward(
        self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None
    ) -> Tensor:
        """D(x; σ) for x (B, C, H, W) on the σ scale and σ a scalar or (B,).

        The network runs in its own dtype; the combination with x is in x's dtype (float64
        inputs stay float64).
        """
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = x.to(dtype)
        sigma = per_sample(sigma, x.shape[0], x).reshape(-1)
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"sigma has {sigma.shape[0]} entries for a batch of {x.shape[0]}")
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        net_dtype = next(self.model.parameters()).dtype
        F_x = self.model((c_in.reshape(-1, 1, 1, 1) * x).to(net_dtype), c_noise, class_labels)
        return c_skip.reshape(-1, 1, 1, 1) * x + c_out.reshape(-1, 1, 1, 1) * F_x.to(dtype)
