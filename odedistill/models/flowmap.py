"""A two-time student, the flow map X(x_s, s, t): the state at time t of the solution through x_s at time s.

    X(x_s, s, t) = w·x_s + (1 − w)·F(x_s, s, t),        w = (t − t_anchor) / (s − t_anchor)
    F(x_s, s, t) = a(s)·x_s + b(s)·NN(c_in(s)·x_s, c_noise(t), c_noise(s), cond)

X(x, s, s) = x holds exactly for every s and every weight. With s = t_start, a = 0 and b = 1
this is PID's student x(z, t) = w(t)·z + (1 − w(t))·NN(c_in(t_start)·z, c_noise(t), cond): a
one-time flow map (``two_times=False``) is that student, its network without the second time
input, and samples in one jump only. The optional skip scaling takes the teacher's own
preconditioning c_skip, c_out (``SkipScaling``; EDM's: c_skip(s) = σ_d²/(s² + σ_d²),
c_out(s) = s·σ_d/√(s² + σ_d²)), shifted to leave s = t_start alone:
a(s) = c_skip(s) − c_skip(T), b(s) = c_out(s)/c_out(T); from a small s the map is then the
identity plus a small learned correction, which is what the ODE does there.
Sampling with K steps composes the map over T = s_0 > s_1 > … > s_K = t_end.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from odedistill._tensor import append_dims
from odedistill.errors import UserError
from odedistill.models.base import Path, TrajectoryModel
from odedistill.models.parametrisation import Parametrisation, SkipScaling
from odedistill.systems.base import ODESystem


class FlowMap(TrajectoryModel):
    """Wrap a two-time network ``NN(x, c_noise_t, class_labels=None, noise_labels_s=c_noise_s)``,
    or a one-time network ``NN(x, c_noise_t, class_labels=None)`` (``two_times=False``).

    Args:
        net: the network; with two times it takes the source time's embedding input as
            ``noise_labels_s``.
        t_start, t_end: the system's interval (the map goes from larger to smaller |t - t_end|).
        param: anchor, input scale c_in(s) and time input c_noise (``Parametrisation``).
        skip: the teacher's c_skip and c_out for the skip term (None: a = 0, b = 1, the plain map).
        two_times: False for PID's one-time student x(z, t) = X(z, t_start, t), whose arithmetic
            is w(t) = (t − t_anchor)/(t_start − t_anchor) with Python-float constants and
            c_in(t_start) a Python float.
    """

    def __init__(
        self,
        net: nn.Module,
        t_start: float,
        t_end: float,
        param: Parametrisation,
        skip: SkipScaling | None = None,
        *,
        two_times: bool = True,
    ) -> None:
        super().__init__()
        self.net = net
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.param = param
        self.t_anchor = float(param.t_anchor)
        if self.t_anchor == self.t_start:
            raise ValueError("t_anchor must differ from t_start")
        self.two_times = bool(two_times)
        if not self.two_times and skip is not None:
            raise ValueError(
                "a one-time flow map starts at t_start, where a = 0 and b = 1: no skip"
            )
        self.skip_scaling = skip
        self.c_in = param.c_in.at(self.t_start)

    @classmethod
    def for_system(
        cls,
        net: nn.Module,
        system: ODESystem,
        param: Parametrisation | None = None,
        skip: SkipScaling | None = None,
        *,
        two_times: bool = True,
    ) -> FlowMap:
        """The flow map of ``system`` around ``net`` (default parametrisation unless given);
        ``two_times=False``: PID's one-time student x(z, t)."""
        param = param or system.default_parametrisation()
        return cls(net, system.t_start, system.t_end, param, skip, two_times=two_times)

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        """The network's time input c_noise(t)."""
        return self.param.c_noise(t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) = (t − t_anchor)/(t_start − t_anchor): the weight of z in x(z, t) from t_start."""
        return (t - self.t_anchor) / (self.t_start - self.t_anchor)

    @property
    def multi_step(self) -> bool:
        """Whether the map jumps from any time s (and samples in several jumps)."""
        return self.two_times

    def skip(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(s), b(s)) in float64; (0, 1) at s = t_start exactly."""
        return self.skip_scaling.shifted(s, self.t_start)

    def network_output(
        self,
        x_s: torch.Tensor,
        s: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The two-time network's output NN(c_in(s)·x_s, c_noise(t), c_noise(s), cond)."""
        c_in = self.param.c_in(s.double()).to(x_s.dtype)
        return self.net(
            append_dims(c_in, x_s.ndim) * x_s,
            self.param.c_noise(t),
            class_labels=cond,
            noise_labels_s=self.param.c_noise(s),
        )

    def transport(
        self,
        x_s: torch.Tensor,
        s: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """X(x_s, s, t) for per-sample times s and t (B,)."""
        if not self.two_times:
            raise ValueError("a one-time flow map jumps from t_start only: call it as x(z, t)")
        F_x = self.network_output(x_s, s, t, cond)
        if self.skip_scaling is not None:
            a, b = self.skip(s)
            F_x = (
                append_dims(a.to(F_x.dtype), x_s.ndim) * x_s
                + append_dims(b.to(F_x.dtype), x_s.ndim) * F_x
            )
        w = (t - self.t_anchor) / (s - self.t_anchor)
        w = torch.where(s == self.t_anchor, torch.ones_like(w), w)  # X(x, s, s) = x there too
        w = append_dims(w, x_s.ndim).to(F_x.dtype)
        return w * x_s + (1 - w) * F_x

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """X(z, t_start, t): the flow map's jump from the initial state (PID's student)."""
        if not self.two_times:
            F_x = self.net(self.c_in * z, self.c_noise(t), class_labels=cond)
            w = append_dims(self.weight(t), z.ndim).to(F_x.dtype)
            return w * z + (1 - w) * F_x
        return self.transport(z, torch.full_like(t, self.t_start), t, cond)

    def path_from(
        self, x_s: torch.Tensor, s: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Path:
        """The curves t ↦ X(x_s, s, t) of a batch of source states: the Lagrangian residual's path."""
        return Path(lambda t, x, s, cond: self.transport(x, s, t, cond), (x_s, s, cond))

    def sample_steps(self, steps: int = 1, times: list[float] | None = None) -> list[float]:
        """The times s_0 = t_start … s_K = t_end of a K-jump sample.

        Without ``times`` the K jumps are of equal length; ``sample_times(grid, K)`` gives the
        times of K steps on the collocation grid the map was trained on (the same on a
        uniform grid when K divides N − 1). A one-time map samples in one jump only.
        """
        if not self.two_times:
            return super().sample_steps(steps, times)
        if times is None:
            if steps < 1:
                raise UserError(f"a flow map samples in steps >= 1, got {steps}")
            span = self.t_end - self.t_start
            times = [self.t_start + span * m / steps for m in range(steps)] + [self.t_end]
        check_times(times, self.t_start, self.t_end)
        return list(times)

    def jumps(self, z: torch.Tensor, cond: torch.Tensor | None, times: list[float]) -> torch.Tensor:
        """K-step sample: x_{k+1} = X(x_k, s_k, s_{k+1}) over ``times``."""
        if not self.two_times:
            return super().jumps(z, cond, times)
        x = z
        for s_k, s_next in zip(times[:-1], times[1:], strict=True):
            x = self.transport(x, self._full(s_k, x), self._full(s_next, x), cond)
        return x

    def pieces(
        self, z: torch.Tensor, cond: torch.Tensor | None, times: list[float]
    ) -> Iterator[tuple[Path, float, float]]:
        """The K jumps' paths t ↦ X(x_k, s_k, t) on [s_k, s_{k+1}], each from the last's end."""
        if not self.two_times:
            yield from super().pieces(z, cond, times)
            return
        x = z
        for s_k, s_next in zip(times[:-1], times[1:], strict=True):
            yield self.path_from(x, self._full(s_k, x), cond), s_k, s_next
            x = self.transport(x, self._full(s_k, x), self._full(s_next, x), cond)

    @staticmethod
    def _full(t: float, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)


def check_times(times: list[float], t_start: float, t_end: float) -> None:
    """The times of a K-step sample: finite, from t_start to t_end, strictly monotone."""
    if not all(math.isfinite(t) for t in times):
        raise UserError(f"sampling times must be finite numbers, got {list(times)}")
    if len(times) < 2 or times[0] != t_start or times[-1] != t_end:
        raise UserError(
            f"sampling times must run from t_start = {t_start:g} to t_end = {t_end:g}, got "
            f"{[round(t, 6) for t in times]}"
        )
    direction = 1 if t_end > t_start else -1
    if any((b - a) * direction <= 0 for a, b in zip(times[:-1], times[1:], strict=False)):
        raise UserError("sampling times must move strictly from t_start towards t_end")


def subgrid(grid: torch.Tensor, steps: int) -> list[int]:
    """Indices of a K-step sub-grid of a collocation grid: round(m (N − 1) / K), m = 0 … K.

    For K dividing N − 1 these nest (the 2-step points are among the 4-step points), so a
    flow map trained on the jumps of several K serves all of them.
    """
    N = grid.shape[0]
    if not 1 <= steps <= N - 1:
        raise UserError(f"{steps} steps need a grid of at least {steps + 1} points, not {N}")
    return [round(m * (N - 1) / steps) for m in range(steps + 1)]


def sample_times(grid: torch.Tensor, steps: int) -> list[float]:
    """The times of the default K-step sample on a collocation grid (``subgrid``)."""
    return [float(grid[i]) for i in subgrid(grid, steps)]
