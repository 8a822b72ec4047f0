"""The flow-matching ODE dx/dt = v(x, t) of the interpolation x_t = (1 − t)·x_0 + t·ε, from t = 1 to 0.

Rectified-flow convention (Liu et al. 2023; Lipman et al. 2023 with the time reversed):
the velocity is v(x_t, t) = E[ε − x_0 | x_t] and the natural target space is the predicted
data x̂_0 = x − t·v. It is the probability-flow ODE of EDM in other coordinates:

    σ = t/(1 − t),   x_edm = x_t/(1 − t),   v(x_t, t) = (x_t − D(x_edm; σ))/t,   x̂_0 = D(x_edm; σ)

(and back: t = σ/(1 + σ), x_t = x_edm/(1 + σ)); both ODEs carry the same noise to the same
data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from odedistill._tensor import append_dims, per_sample
from odedistill.errors import UserError
from odedistill.parametrisation import Parametrisation
from odedistill.systems.base import ODESystem

Velocity = Callable[..., torch.Tensor]

__all__ = ["FlowMatchingODE", "VelocityFromDenoiser", "edm_to_flow", "flow_to_edm"]


def edm_to_flow(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM state and noise level (x, σ) to flow-matching (x_t, t): t = σ/(1+σ), x_t = x/(1+σ)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return x / append_dims(1 + sigma, x.ndim), sigma / (1 + sigma)


def flow_to_edm(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow-matching (x_t, t), t < 1, to EDM (x, σ): σ = t/(1−t), x = x_t/(1−t)."""
    t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
    return x_t / append_dims(1 - t, x_t.ndim), t / (1 - t)


class VelocityFromDenoiser(torch.nn.Module):
    """The flow-matching velocity of an EDM denoiser: v(x_t, t) = (x_t − D(x_t/(1−t); t/(1−t)))/t.

    Defined for 0 < t < 1: at t = 1 the EDM noise level is infinite, and as t → 0 the
    difference x_t − D cancels (use a closed form there where one exists, e.g.
    :class:`~odedistill.teachers.gaussian_mixture.GaussianMixtureVelocity`).
    """

    def __init__(self, denoiser: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | float, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = per_sample(t, x.shape[0], x)
        if not ((t > 0) & (t < 1)).all():
            raise ValueError("a velocity from an EDM denoiser needs 0 < t < 1")
        x_edm, sigma = flow_to_edm(x, t)
        return (x - self.denoiser(x_edm, sigma, class_labels=class_labels)) / append_dims(t, x.ndim)

    def sample(self, n: int, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        sample = getattr(self.denoiser, "sample", None)
        if sample is None:
            raise NotImplementedError(f"{type(self.denoiser).__name__} cannot draw data")
        return sample(n, generator=generator, **kwargs)


class FlowMatchingODE(ODESystem):
    """dx/dt = v(x, t, cond) from t = t_max (1 by default) down to t_min, x(t_max) = t_max·ε.

    ``velocity(x, t, class_labels=None)`` estimates E[ε − x_0 | x_t] for the interpolation
    x_t = (1 − t)·x_0 + t·ε, ε ~ N(0, I). The initial state is t_max·ε, which is exact at
    t_max = 1 and, like the probability-flow ODE's N(0, T²I), neglects the (1 − t_max)·x_0
    term otherwise (it is the image of that prior under x_t = x_edm/(1+σ)). The PID residual
    is measured on the predicted data: ``to_target(x, t, v) = x − t·v``, whose teacher value
    is ``x − t·v_teacher(x, t)``.

    The default student (``default_parametrisation``) is anchored at t = 0:
    x(z, t) = (t/t_max)·z + (1 − t/t_max)·F, which at t_max = 1 is the interpolation itself
    with F in the place of x_0; F sees z unscaled and the time t.

    ``velocity=None`` gives the system without its teacher: it draws initial states and
    conditions (what sampling a trained student needs) but has no vector field.
    """

    network_teacher = True

    def __init__(
        self,
        velocity: Velocity | None,
        state_shape: tuple[int, ...],
        t_max: float = 1.0,
        t_min: float = 0.0,
        label_dim: int = 0,
    ) -> None:
        if not 0 <= t_min < t_max <= 1:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.velocity = velocity
        self.state_shape = tuple(state_shape)
        self.t_start = float(t_max)
        self.t_end = float(t_min)
        self.label_dim = int(label_dim)

    @property
    def teacher(self) -> torch.nn.Module | None:
        return self.velocity if isinstance(self.velocity, torch.nn.Module) else None

    def default_parametrisation(self) -> Parametrisation:
        return Parametrisation.plain(0.0)

    def f(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.velocity is None:
            raise UserError(
                "this flow-matching ODE was rebuilt without its teacher (from a student "
                "checkpoint); it can draw initial states but not evaluate the vector field"
            )
        return self.velocity(x, t, class_labels=cond)

    def to_target(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x - append_dims(t, x.ndim) * v

    def sample_initial(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return torch.randn((n, *self.state_shape), generator=generator, dtype=dtype) * self.t_start
