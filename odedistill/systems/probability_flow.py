"""The probability-flow ODE of a denoiser in EDM form: dx/dt = (x - D(x; t)) / t, sigma(t) = t."""

from __future__ import annotations

from collections.abc import Callable

import torch

from odedistill._tensor import append_dims
from odedistill.errors import UserError
from odedistill.systems.base import ODESystem

Denoiser = Callable[..., torch.Tensor]


class ProbabilityFlowODE(ODESystem):
    """Karras et al. (2022), eq. 4 with sigma(t) = t, integrated from T = t_max down to t_min.

    ``denoiser(x, sigma, class_labels=None)`` estimates E[x0 | x0 + sigma n = x]. The initial
    state is z ~ N(0, T^2 I). The PID residual is measured in denoised space:
    ``to_target(x, t, v) = x - t v``, whose teacher value is ``D(x; t)`` itself.

    ``denoiser=None`` gives the system without its teacher: it draws initial states and
    conditions (what sampling a trained student needs) but has no vector field.
    """

    network_teacher = True

    reference_log_time = True

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

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        sample = getattr(self.denoiser, "sample", None)
        if sample is None:
            return super().sample_data(n, generator)
        return sample(n, generator=generator)
