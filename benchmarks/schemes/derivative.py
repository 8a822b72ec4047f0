"""Part 1: each residual scheme's dx/dt on closed-form trajectories x(z, t), error against N and fitted order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from benchmarks.schemes.settings import BenchSettings, declared_order, scheme_names
from odedistill import TrajectoryModel, karras_grid, make_scheme


def _tdims(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (z.ndim - 1))).to(z.dtype)


class AnalyticTrajectory(TrajectoryModel):
    """A trajectory x(z, t) in closed form with its exact time derivative, for derivative tests."""

    label: str = ""

    def derivative(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def initial_states(self, m: int) -> torch.Tensor:
        raise NotImplementedError


class GaussianFlowTrajectory(AnalyticTrajectory):
    """Probability-flow trajectory of a 1-D Gaussian N(mu, s^2) (sigma(t) = t, T = 80 -> 0.002).

    x(z, t) = mu + (z - mu) sqrt(s^2 + t^2) / sqrt(s^2 + T^2),
    dx/dt  = (z - mu) t / (sqrt(s^2 + t^2) sqrt(s^2 + T^2)).
    """

    label = "probability-flow ODE of N(0.3, 0.5^2), t: 80 -> 0.002"

    def __init__(
        self, mu: float = 0.3, s: float = 0.5, T: float = 80.0, eps: float = 0.002
    ) -> None:
        super().__init__()
        self.mu, self.s, self.t_start, self.t_end = mu, s, T, eps

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        tt = _tdims(t, z)
        return self.mu + (z - self.mu) * torch.sqrt(self.s**2 + tt**2) / math.hypot(
            self.s, self.t_start
        )

    def derivative(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = _tdims(t, z)
        return (
            (z - self.mu) * tt / (torch.sqrt(self.s**2 + tt**2) * math.hypot(self.s, self.t_start))
        )

    def initial_states(self, m: int) -> torch.Tensor:
        return torch.linspace(-2 * self.t_start, 2 * self.t_start, m, dtype=torch.float64)[:, None]


class DecayingSinusoidTrajectory(AnalyticTrajectory):
    """x(z, t) = z exp(-t/30) + sin(t/7) on t: 80 -> 0.002 (the trajectory of tests/problems.py)."""

    label = "z exp(-t/30) + sin(t/7), t: 80 -> 0.002"

    def __init__(self) -> None:
        super().__init__()
        self.t_start, self.t_end = 80.0, 0.002

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        tt = _tdims(t, z)
        return z * torch.exp(-tt / 30) + torch.sin(tt / 7)

    def derivative(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = _tdims(t, z)
        return -z * torch.exp(-tt / 30) / 30 + torch.cos(tt / 7) / 7

    def initial_states(self, m: int) -> torch.Tensor:
        return torch.linspace(-1, 1, m, dtype=torch.float64)[:, None]


class SpiralTrajectory(AnalyticTrajectory):
    """LinearODE's default spiral dx/dt = A x, A = [[-a, -b], [b, -a]], traced on t: 1 -> 0.002.

        x(z, t) = exp(-a t) R(b t) z,   dx/dt = A x(z, t).

    The Karras grid needs positive ends here: from t = 0 its first spacings are ~N^-7, where
    a difference quotient loses every digit to rounding.
    """

    label = "spiral exp(-0.5 t) R(2 t) z (LinearODE's A), t: 1 -> 0.002"

    def __init__(self, a: float = 0.5, b: float = 2.0) -> None:
        super().__init__()
        self.a, self.b, self.t_start, self.t_end = a, b, 1.0, 0.002

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        tt = t.to(z.dtype)
        c, s, e = torch.cos(self.b * tt), torch.sin(self.b * tt), torch.exp(-self.a * tt)
        return torch.stack(
            [e * (c * z[:, 0] - s * z[:, 1]), e * (s * z[:, 0] + c * z[:, 1])], dim=1
        )

    def derivative(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = self.forward(z, t)
        return torch.stack(
            [-self.a * x[:, 0] - self.b * x[:, 1], self.b * x[:, 0] - self.a * x[:, 1]], dim=1
        )

    def initial_states(self, m: int) -> torch.Tensor:
        angle = torch.arange(m, dtype=torch.float64) * (2 * math.pi / m)
        return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


TRAJECTORIES: dict[str, type[AnalyticTrajectory]] = {
    "gaussian_flow": GaussianFlowTrajectory,
    "sinusoid": DecayingSinusoidTrajectory,
    "spiral": SpiralTrajectory,
}


def max_derivative_error(
    scheme_name: str, trajectory: AnalyticTrajectory, N: int, samples: int = 8
) -> float:
    """max |v - dx/dt| / max |dx/dt| over ``samples`` initial states at every point of the Karras grid."""
    grid = karras_grid(N, trajectory.t_start, trajectory.t_end)
    z0 = trajectory.initial_states(samples)
    z = z0.repeat_interleave(N, dim=0)
    idx = torch.arange(N).repeat(samples)
    with torch.no_grad():
        t, _, v = make_scheme(scheme_name)(trajectory.path(z), grid, idx)
        exact = trajectory.derivative(z, t)
    return ((v - exact).abs().max() / exact.abs().max()).item()


def fitted_order(Ns: list[int], errors: list[float]) -> float | None:
    """p in error ~ N^-p by least squares on log-log axes (None below two usable points)."""
    pts = [(n, e) for n, e in zip(Ns, errors, strict=True) if e > 0 and math.isfinite(e)]
    if len(pts) < 2:
        return None
    x = np.log([n for n, _ in pts])
    y = np.log([e for _, e in pts])
    return float(-np.polyfit(x, y, 1)[0])


def _mean_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def derivative_accuracy(settings: BenchSettings) -> dict[str, Any]:
    """Part 1: max derivative error against N on the Karras grid and the fitted order, per scheme.

    A scheme that declares an exact derivative (infinite order) gets no fitted order; its
    largest error over every trajectory and N is ``<name>_max_error``.
    """
    names = scheme_names()
    Ns = list(settings.deriv_Ns)
    fit_Ns = [n for n in Ns if n >= settings.deriv_fit_min_N]
    out: dict[str, Any] = {
        "Ns": Ns,
        "fit_Ns": fit_Ns,
        "grid": "karras rho=7",
        "error": "max |v - dx/dt| / max |dx/dt|, float64",
        "declared_order": {n: declared_order(n) for n in names},
        "trajectories": {},
    }
    for key, cls in TRAJECTORIES.items():
        traj = cls().double()
        rows: dict[str, Any] = {}
        for name in names:
            errors = [max_derivative_error(name, traj, N, settings.deriv_samples) for N in Ns]
            fit = [e for n, e in zip(Ns, errors, strict=True) if n >= settings.deriv_fit_min_N]
            exact = max(errors) < 1e-10
            rows[name] = {
                "errors": errors,
                "fitted_order": None if exact else fitted_order(fit_Ns, fit),
                "exact": exact,
            }
        out["trajectories"][key] = {"label": cls.label, "schemes": rows}
    out["summary_order"] = {
        name: _mean_or_none(
            [t["schemes"][name]["fitted_order"] for t in out["trajectories"].values()]
        )
        for name in names
    }
    for name in names:
        if out["declared_order"][name] is None:
            out[f"{name}_max_error"] = max(
                max(t["schemes"][name]["errors"]) for t in out["trajectories"].values()
            )
    return out
