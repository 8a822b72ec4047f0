"""The probability-flow ODE of a denoiser in EDM form: dx/dt = (x - D(x; t)) / t, sigma(t) = t."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from odedistill._tensor import append_dims
from odedistill.errors import UserError
from odedistill.parametrisation import Parametrisation, SkipScaling
from odedistill.systems.base import ODESystem

Denoiser = Callable[..., torch.Tensor]


@runtime_checkable
class Preconditioned(Protocol):
    """A denoiser D = c_skip·x + c_out·F(c_in·x; c_noise) that names its own c_skip and c_out."""

    def skip_scaling(self) -> SkipScaling: ...


class ProbabilityFlowODE(ODESystem):
    """Karras et al. (2022), eq. 4 with sigma(t) = t, integrated from T = t_max down to t_min.

    ``denoiser(x, sigma, class_labels=None)`` estimates E[x0 | x0 + sigma n = x]. The initial
    state is z ~ N(0, T^2 I). The PID residual is measured in denoised space:
    ``to_target(x, t, v) = x - t v``, whose teacher value is ``D(x; t)`` itself.

    The default student is PID's (anchor 0, c_in = 1/√(σ_d² + T²), c_noise = ln(t)/4); a flow
    map's skip is the teacher's own preconditioning, or EDM's with σ_d for a teacher without
    one (an exact denoiser).

    ``denoiser=None`` gives the system without its teacher: it draws initial states and
    conditions (what sampling a trained student needs) but has no vector field.
    """

    network_teacher = True

    reference_log_time = True

    default_grid = "karras"

    def __init__(
        self,
        denoiser: Denoiser | None,
        state_shape: tuple[int, ...],
        t_max: float = 80.0,
        t_min: float = 0.002,
        sigma_data: float = 0.5,
        label_dim: int = 0,
    ) -> None:
        if not 0 < t_min < t_max:
            raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.denoiser = denoiser
        self.state_shape = tuple(state_shape)
        self.t_start = float(t_max)
        self.t_end = float(t_min)
        self.sigma_data = float(sigma_data)
        self.label_dim = int(label_dim)

    @property
    def teacher(self) -> nn.Module | None:
        return self.denoiser if isinstance(self.denoiser, nn.Module) else None

    def default_parametrisation(self) -> Parametrisation:
        return Parametrisation.edm(self.sigma_data)

    def flow_map_skip(self) -> SkipScaling:
        if isinstance(self.denoiser, Preconditioned):
            return self.denoiser.skip_scaling()
        return SkipScaling.edm(self.sigma_data)

    def latent_scale(self) -> float:
        return self.t_start

    def data_scale(self, t: torch.Tensor) -> torch.Tensor:
        """x(t) ≈ data + t·n: 1/√(1 + t²) brings the whole path to the data's scale."""
        return (1 + t**2).rsqrt()

    def f(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return (x - self.target(x, t, cond)) / append_dims(t, x.ndim)

    def target(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.denoiser is None:
            raise UserError(
                "this probability-flow ODE was rebuilt without its teacher (from a student "
                "checkpoint); it can draw initial states but not evaluate the vector field"
            )
        return self.denoiser(x, t, class_labels=cond)

    def to_target(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x - append_dims(t, x.ndim) * v

    def sample_initial(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return torch.randn((n, *self.state_shape), generator=generator, dtype=dtype) * self.t_start
