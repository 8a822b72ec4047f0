"""The ODESystem interface: dx/dt = f(x, t, cond) from t_start to t_end, x(t_start) = z."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from odedistill.parametrisation import Parametrisation, SkipScaling


class ODESystem(ABC):
    """An initial-value problem to distil into a one-evaluation solver.

    A system declares its time interval ``[t_start -> t_end]`` (either direction), the
    shape of one state, the vector field ``f(x, t, cond)`` with a per-sample time ``t`` of
    shape (B,), and how initial states ``z`` (and optional conditions such as one-hot class
    labels) are drawn. The PID residual compares ``to_target(x, t, dx/dt)`` with
    ``target(x, t, cond)``; by default both are velocities (the identity map). How a student
    wraps its network (anchor, input scale, time input) is the student's concern:
    ``odedistill.models.parametrisation``.
    """

    t_start: float
    t_end: float
    state_shape: tuple[int, ...]
    label_dim: int = 0
    #: integrate the scipy reference in s = ln t (for dynamics that scale like 1/t)
    reference_log_time: bool = False
    #: f is a large network teacher: PID's stop-gradient sg[f(x)] and grid residual by default
    #: (a cheap user ODE trains with the full gradient at continuous times; DESIGN.md section 6)
    network_teacher: bool = False
    #: the collocation grid a distillation of this system takes by default (``odedistill.grids``)
    default_grid: str = "uniform"

    # ------------------------------------------------------------ the teacher
    @property
    def teacher(self) -> nn.Module | None:
        """The network behind ``f`` (a denoiser or a velocity), or None: what a run compiles,
        converts to channels-last and samples beside; a plain ODE has none."""
        return None

    def default_parametrisation(self) -> Parametrisation:
        """How a student wraps its network unless told otherwise: here plain, anchored at
        t_end (c_in = 1, c_noise = t). A student copying a teacher's network takes the
        teacher's own instead."""
        return Parametrisation.plain(self.t_end)

    def flow_map_skip(self) -> SkipScaling | None:
        """The skip term of a flow map of this system, from its teacher's own
        preconditioning: c_skip, c_out (None: the plain map, a = 0, b = 1)."""
        return None

    def latent_scale(self) -> float | None:
        """z = scale·n from a seed's unit Gaussian latents n (EDM's generate.py noise, drawn
        on the model's device), or None: ``sample_initial`` from the seed's CPU generator."""
        return None

    def data_scale(self, t: torch.Tensor) -> torch.Tensor | None:
        """A factor k(t) that brings x(t) to the data's scale along a path (for pictures);
        None where x(t) is on it already."""
        return None

    # ----------------------------------------------------------------- the ODE
    @abstractmethod
    def f(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The vector field dx/dt at states ``x`` (B, *state_shape) and times ``t`` (B,)."""

    @abstractmethod
    def sample_initial(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Draw ``n`` initial states z (on the CPU, from ``generator``)."""

    def sample_condition(
        self, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """Draw ``n`` conditions, or None for an unconditional system.

        By default: one-hot class labels drawn uniformly when ``label_dim`` > 0, else None.
        """
        return one_hot_labels(n, self.label_dim, generator) if self.label_dim > 0 else None

    # ------------------------------------------------------- the residual space
    def to_target(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Map a velocity ``v`` at (x, t) to the space where distances are measured."""
        return v

    def target(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The teacher's value in target space: ``to_target(x, t, f(x, t, cond))``."""
        return self.to_target(x, t, self.f(x, t, cond))

    # -------------------------------------------------------------- data side
    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` states from the true distribution at ``t_end``, where it is known: here the
        teacher's own ``sample`` (an exact teacher's data), where it has one."""
        sample = getattr(self.teacher, "sample", None)
        if sample is None:
            raise NotImplementedError(f"{type(self).__name__} has no known distribution at t_end")
        return sample(n, generator=generator)

    @property
    def has_exact_marginals(self) -> bool:
        """Whether ``sample_marginal`` draws exact states of the ODE's own distribution at any
        time: here where the teacher draws its own (``sample_marginal``: an exact teacher's, e.g.
        a Gaussian mixture's); never for a network teacher."""
        return callable(getattr(self.teacher, "sample_marginal", None))

    def sample_marginal(
        self,
        s: torch.Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw one exact state x(s) ~ p_s per entry of the times ``s`` (n,) (on the CPU),
        where ``has_exact_marginals``: here the teacher's own marginal."""
        if not self.has_exact_marginals:
            raise NotImplementedError(f"{type(self).__name__} has no exact marginals")
        return self.teacher.sample_marginal(torch.as_tensor(s).reshape(-1), generator, dtype)

    def exact_solution(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x(t) from x(t_start) = z in closed form, where one exists."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form solution")

    @property
    def has_exact_solution(self) -> bool:
        return type(self).exact_solution is not ODESystem.exact_solution

    @property
    def dim(self) -> int:
        return math.prod(self.state_shape)

    @property
    def is_image(self) -> bool:
        return len(self.state_shape) == 3


def one_hot_labels(
    n: int, label_dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` one-hot rows of classes drawn uniformly from ``label_dim``."""
    idx = torch.randint(0, label_dim, (n,), generator=generator)
    return torch.nn.functional.one_hot(idx, label_dim).float()
