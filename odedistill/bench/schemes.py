"""Benchmark of the residual schemes (upwind, central, autodiff): derivative order, distillation accuracy, cost, stability.

Four parts, one function each, all returning plain JSON-ready dicts:

1. ``derivative_accuracy``: the schemes' estimate of dx/dt on closed-form trajectories, max
   error against the number N of Karras grid points, and the fitted order (log-log slope).
2. ``distillation_accuracy``: one-step students trained with each scheme on systems with a
   known solution, at a fixed iteration budget, against N; beside them the teacher's explicit
   Euler with N - 1 steps on the same grid (PID's Theorem 1: a perfect upwind student *is*
   that solver) and Heun on the same grid.
3. ``scheme_cost``: wall time of a training iteration (forward, backward, optimiser step),
   student evaluations per sample and peak memory of one step, as ratios to upwind measured
   in the same run with interleaved repeats.
4. ``stability``: the image setting (digits Gaussian-mixture teacher, 1x8x8, SmallUNet
   student): saturated pixels and sample spread of one-step samples at checkpoints during
   training, to show (or not) the drift to high-contrast samples Tee et al. (2024) report
   for the autodiff variant.

``run_scheme_benchmark`` runs the four parts and writes ``report.md``, ``results.json`` and
PNG plots into a folder (see ``odedistill.bench.report``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odedistill.errors import UserError
from odedistill.evaluation.metrics import relative_error
from odedistill.evaluation.report import exact_endpoints
from odedistill.grids import karras_grid, make_grid
from odedistill.models.base import TrajectoryModel
from odedistill.schemes import SCHEMES, make_scheme
from odedistill.solvers import euler, heun, solve_reference

#: the schemes compared, upwind (the reference of every ratio) first
SCHEME_NAMES: tuple[str, ...] = ("upwind", "central", "autodiff")

#: pixels beyond this magnitude are called saturated (the clamp of one-step image samples)
SATURATION = 1.0
#: pixels beyond this are far outside the data: the digits mixture has std 0.05 around [-1, 1]
FAR_SATURATION = 1.25


# ----------------------------------------------------------------------------- settings
@dataclass
class BenchSettings:
    """Every knob of the scheme benchmark. ``full()`` and ``quick()`` are the two presets."""

    preset: str = "full"
    seed: int = 0  # seed of every student initialisation and noise stream
    threads: int = 1  # torch intra-op threads on the CPU (1: small nets, shared machines)
    # 1. derivative accuracy on closed-form trajectories
    deriv_Ns: list[int] = field(default_factory=lambda: [10, 20, 40, 80, 160, 320, 640])
    deriv_fit_min_N: int = 40  # the order is fitted on N >= this (the asymptotic range)
    deriv_samples: int = 8  # initial states per trajectory, each at every grid point
    # 2. distillation accuracy against N
    distill_systems: list[str] = field(default_factory=lambda: ["ring", "linear", "pendulum"])
    distill_Ns: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 500])
    distill_iterations: int = 1500  # the fixed budget of every student
    distill_batch: int = 256
    distill_width: int = 64  # MLP student
    distill_depth: int = 2
    distill_lr: float = 3e-3  # Adam, cosine decay to 0 over the budget
    distill_heldout: int = 1000  # held-out initial states for the errors
    ring_std: float = 0.25  # std of each of the ring's 8 modes (radius 1)
    # 3. cost
    cost_N: int = 250
    cost_mlp_width: int = 256
    cost_mlp_depth: int = 4
    cost_mlp_batch: int = 256
    cost_unet_channels: int = 32
    cost_unet_batch: int = 64
    cost_ddpmpp_batch: int = 64  # CUDA only: the full CIFAR-10 DDPM++ network
    cost_warmup: int = 2  # iterations before timing, per scheme
    cost_repeats: int = 5  # interleaved timing rounds
    cost_iters: int = 10  # iterations per round
    # 4. stability on images
    stab_iterations: int = 1000
    stab_batch: int = 64
    stab_channels: int = 16  # SmallUNet base width, channel_mult (1, 2), attention at 4x4
    stab_N: int = 250
    stab_lr: float = 1e-3  # Adam, constant (as PID)
    stab_checkpoints: int = 6  # evaluation points, step 0 and the last included
    stab_samples: int = 256  # fixed one-step samples evaluated at each checkpoint
    stab_reference_tol: float = 1e-5  # scipy tolerance of the exact endpoints

    @classmethod
    def full(cls) -> BenchSettings:
        return cls()

    @classmethod
    def quick(cls) -> BenchSettings:
        return cls(
            preset="quick",
            deriv_Ns=[10, 20, 40, 80, 160],
            distill_Ns=[10, 40],
            distill_iterations=120,
            distill_batch=128,
            distill_width=32,
            distill_heldout=200,
            cost_N=50,
            cost_mlp_width=64,
            cost_mlp_depth=2,
            cost_mlp_batch=128,
            cost_unet_channels=8,
            cost_unet_batch=16,
            cost_ddpmpp_batch=8,
            cost_warmup=1,
            cost_repeats=3,
            cost_iters=3,
            stab_iterations=40,
            stab_batch=16,
            stab_channels=8,
            stab_N=50,
            stab_checkpoints=3,
            stab_samples=32,
            stab_reference_tol=1e-4,
        )


def _log_default(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------- 1. derivative accuracy (no training)
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
        t, _, v = make_scheme(scheme_name)(trajectory, grid, z, idx)
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


def derivative_accuracy(settings: BenchSettings) -> dict[str, Any]:
    """Part 1: max derivative error against N on the Karras grid and the fitted order, per scheme."""
    Ns = list(settings.deriv_Ns)
    fit_Ns = [n for n in Ns if n >= settings.deriv_fit_min_N]
    out: dict[str, Any] = {
        "Ns": Ns,
        "fit_Ns": fit_Ns,
        "grid": "karras rho=7",
        "error": "max |v - dx/dt| / max |dx/dt|, float64",
        "declared_order": {
            n: (None if math.isinf(SCHEMES[n].order) else SCHEMES[n].order) for n in SCHEME_NAMES
        },
        "trajectories": {},
    }
    for key, cls in TRAJECTORIES.items():
        traj = cls().double()
        rows: dict[str, Any] = {}
        for name in SCHEME_NAMES:
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
        for name in SCHEME_NAMES
    }
    out["autodiff_max_error"] = max(
        max(t["schemes"]["autodiff"]["errors"]) for t in out["trajectories"].values()
    )
    return out


def relative_l2(x: torch.Tensor, x_exact: torch.Tensor) -> float:
    """|x - x_exact| / |x_exact| over the whole set (robust where single |x_exact| are small)."""
    x, x_exact = x.double().flatten(), x_exact.double().flatten()
    return ((x - x_exact).norm() / x_exact.norm().clamp_min(1e-300)).item()


def _mean_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


# ------------------------------------------------------------------ training helpers
def _system_recipe(system: str, settings: BenchSettings) -> tuple[dict[str, Any], str]:
    """The recipe sections of a benchmark system and the grid it is distilled on."""
    if system == "ring":
        teacher = {"preset": "ring", "modes": 8, "radius": 1.0, "std": settings.ring_std}
        return {"system": {"kind": "probability_flow"}, "teacher": teacher}, "karras"
    if system == "linear":
        return {"system": {"kind": "linear"}}, "uniform"
    if system == "pendulum":
        return {"system": {"kind": "pendulum"}}, "uniform"
    raise UserError(f"unknown benchmark system {system!r}; expected ring, linear or pendulum")


@contextmanager
def _trainer(raw: dict[str, Any], device: torch.device) -> Iterator[Any]:
    """A ``Trainer`` for the recipe ``raw`` (validated through the config), run directory unused."""
    from odedistill.training.config import from_dict
    from odedistill.training.loop import Trainer, build_session

    cfg = from_dict(raw, source="scheme benchmark")
    session = build_session(cfg, device)
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        yield Trainer(session, Path(tmp))


def _train(
    trainer: Any,
    iterations: int,
    lr: float,
    cosine: bool,
    checkpoints: dict[int, Callable[[int, float], None]] | None = None,
) -> dict[str, Any]:
    """Train with ``trainer``'s own step; optional cosine decay of the learning rate to 0.

    ``checkpoints`` maps a step (0 = before training) to ``callback(step, mean_loss)``, where
    the loss is the mean since the previous checkpoint. Stops at a non-finite loss.
    """
    checkpoints = checkpoints or {}
    losses: list[float] = []
    if 0 in checkpoints:
        checkpoints[0](0, float("nan"))
    t0 = time.perf_counter()
    for k in range(iterations):
        if cosine:
            for group in trainer.opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / iterations))
        loss = trainer.train_step()
        value = float(loss)
        if not math.isfinite(value):
            return {"diverged_at": k + 1, "seconds": time.perf_counter() - t0, "final_loss": value}
        trainer.optimizer_step()
        losses.append(value)
        if k + 1 in checkpoints:
            checkpoints[k + 1](k + 1, float(np.mean(losses)))
            losses = []
    tail = losses[-max(1, iterations // 10) :] if losses else [float("nan")]
    return {
        "diverged_at": None,
        "seconds": time.perf_counter() - t0,
        "final_loss": float(np.mean(tail)),
    }


def _recipe(
    system_sections: dict[str, Any],
    scheme: str,
    N: int,
    grid: str,
    student: dict[str, Any],
    batch: int,
    lr: float,
    seed: int,
) -> dict[str, Any]:
    return {
        **system_sections,
        "run": {"seed": seed},
        "student": student,
        "scheme": {"kind": scheme, "N": N, "grid": grid},
        "loss": {"distance": "l2"},
        "optim": {"name": "adam", "lr": lr},
        "train": {"batch": batch, "ema_rates": []},
    }


# --------------------------------------------------------- 2. distillation accuracy vs N
def distillation_accuracy(
    settings: BenchSettings, device: torch.device, log: Callable[[str], None] = _log_default
) -> dict[str, Any]:
    """Part 2: one-step students of each scheme against the teacher's Euler (N - 1 steps), per N."""
    from odedistill.training import build
    from odedistill.training.config import from_dict

    out: dict[str, Any] = {
        "Ns": list(settings.distill_Ns),
        "iterations": settings.distill_iterations,
        "batch": settings.distill_batch,
        "student": f"MLP width {settings.distill_width} depth {settings.distill_depth}",
        "optimizer": f"Adam lr {settings.distill_lr:g}, cosine decay to 0, no EMA",
        "distance": "squared L2",
        "error": "mean over samples of |x - x_exact| / |x_exact| at t_end (rel_l2: the ratio of sums)",
        "heldout": settings.distill_heldout,
        "systems": {},
    }
    for system_name in settings.distill_systems:
        sections, grid_kind = _system_recipe(system_name, settings)
        cpu_system = build.build_system(from_dict(sections), torch.device("cpu"))
        gen = torch.Generator().manual_seed(12345)
        z = cpu_system.sample_initial(settings.distill_heldout, gen, dtype=torch.float64)
        t0 = time.perf_counter()
        x_exact = exact_endpoints(cpu_system, z)
        reference = "closed form" if cpu_system.has_exact_solution else "scipy DOP853 1e-10"
        rows = []
        for N in settings.distill_Ns:
            grid = make_grid(grid_kind, N, cpu_system.t_start, cpu_system.t_end)
            x_euler, x_heun = euler(cpu_system, z, grid), heun(cpu_system, z, grid)
            row: dict[str, Any] = {
                "N": N,
                "euler": relative_error(x_euler, x_exact),
                "euler_rel_l2": relative_l2(x_euler, x_exact),
                "euler_nfe": N - 1,
                "heun": relative_error(x_heun, x_exact),
                "heun_rel_l2": relative_l2(x_heun, x_exact),
                "heun_nfe": 2 * (N - 1),
                "students": {},
            }
            for scheme in SCHEME_NAMES:
                student = {
                    "net": "mlp",
                    "width": settings.distill_width,
                    "depth": settings.distill_depth,
                }
                raw = _recipe(
                    sections,
                    scheme,
                    N,
                    grid_kind,
                    student,
                    settings.distill_batch,
                    settings.distill_lr,
                    settings.seed,
                )
                with _trainer(raw, device) as trainer:
                    info = _train(
                        trainer, settings.distill_iterations, settings.distill_lr, cosine=True
                    )
                    with torch.no_grad():
                        x = trainer.s.model.sample(z.float().to(device)).double().cpu()
                ok = info["diverged_at"] is None
                err = relative_error(x, x_exact) if ok else float("nan")
                l2 = relative_l2(x, x_exact) if ok else float("nan")
                row["students"][scheme] = {"rel_error": err, "rel_l2": l2, **info}
                log(
                    f"  distill {system_name:8s} N={N:<4d} {scheme:8s} error {err:.4g} "
                    f"(Euler {row['euler']:.4g}) {info['seconds']:.1f}s"
                )
            rows.append(row)
        out["systems"][system_name] = {
            "label": _system_label(system_name, cpu_system, grid_kind),
            "grid": grid_kind,
            "reference": reference,
            "reference_seconds": time.perf_counter() - t0,
            "rows": rows,
        }
    return out


def _system_label(name: str, system: Any, grid: str) -> str:
    """A one-line description of a benchmark system, read off the system object."""
    span = f"t: {system.t_start:g} -> {system.t_end:g}, {grid} grid"
    if name == "ring":
        D = system.denoiser
        radius = D.means.norm(dim=1).mean().item()
        return (
            f"probability-flow ODE of a ring of {D.num_components} Gaussians (radius {radius:g}, "
            f"std {D.stds[0].item():g}), {span}"
        )
    if name == "linear":
        return f"LinearODE dx/dt = A x, A = {system.A.tolist()}, {span}"
    if name == "pendulum":
        return f"DampedPendulum (gamma {system.gamma:g}, spread {system.spread:g}), {span}"
    return f"{name}, {span}"


# ------------------------------------------------------------------------------ 3. cost
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _songunet_available() -> bool:
    try:
        from odedistill.teachers.networks import SongUNet  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def _cost_trainer(net: str, scheme: str, device: torch.device, s: BenchSettings) -> Iterator[Any]:
    """A trainer for the cost measurements: 'mlp' (2-D ring), 'unet' (digits) or 'ddpmpp' (CIFAR)."""
    if net == "mlp":
        sections, _ = _system_recipe("ring", s)
        student = {"net": "mlp", "width": s.cost_mlp_width, "depth": s.cost_mlp_depth}
        raw = _recipe(sections, scheme, s.cost_N, "karras", student, s.cost_mlp_batch, 1e-4, 0)
        with _trainer(raw, device) as trainer:
            yield trainer
        return
    if net == "unet":
        sections = {"system": {"kind": "probability_flow"}, "teacher": {"preset": "digits"}}
        student = {"net": "unet", "channels": s.cost_unet_channels, "channel_mult": [1, 2]}
        raw = _recipe(sections, scheme, s.cost_N, "karras", student, s.cost_unet_batch, 1e-4, 0)
        with _trainer(raw, device) as trainer:
            yield trainer
        return
    if net == "ddpmpp":
        with _ddpmpp_trainer(scheme, device, s) as trainer:
            yield trainer
        return
    raise ValueError(f"unknown cost network {net!r}")


#: EDM's CIFAR-10 DDPM++ network (Karras et al. 2022, App. F.2), dropout off for distillation
DDPMPP_CIFAR10 = dict(
    img_resolution=32,
    in_channels=3,
    out_channels=3,
    augment_dim=9,
    model_channels=128,
    channel_mult=(2, 2, 2),
    num_blocks=4,
    attn_resolutions=(16,),
    dropout=0.0,
    embedding_type="positional",
    channel_mult_noise=1,
    encoder_type="standard",
    decoder_type="standard",
    resample_filter=(1, 1),
)


@contextmanager
def _ddpmpp_trainer(scheme: str, device: torch.device, s: BenchSettings) -> Iterator[Any]:
    """Full DDPM++ student on 3x32x32 with a cheap exact teacher (16-component Gaussian mixture)."""
    from odedistill.models.boundary import BoundaryTrajectory
    from odedistill.systems.probability_flow import ProbabilityFlowODE
    from odedistill.teachers.gaussian_mixture import GaussianMixtureDenoiser
    from odedistill.teachers.networks import SongUNet
    from odedistill.training.config import from_dict
    from odedistill.training.ema import EMA
    from odedistill.training.loop import Session, Trainer

    torch.manual_seed(s.seed)
    means = torch.rand(16, 3, 32, 32, dtype=torch.float64) * 2 - 1
    D = GaussianMixtureDenoiser(means, 0.05).to(device).eval().requires_grad_(False)
    system = ProbabilityFlowODE(D, (3, 32, 32))
    model = BoundaryTrajectory.for_system(SongUNet(**DDPMPP_CIFAR10), system).to(device)
    raw = _recipe({}, scheme, s.cost_N, "karras", {}, s.cost_ddpmpp_batch, 2e-4, s.seed)
    cfg = from_dict(raw, source="scheme benchmark")
    session = Session(
        cfg=cfg,
        device=device,
        system=system,
        model=model,
        ema=EMA(model, []),
        scheme=make_scheme(scheme),
        grid=karras_grid(s.cost_N, system.t_start, system.t_end).to(device),
    )
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        yield Trainer(session, Path(tmp))


def _step(trainer: Any) -> None:
    trainer.train_step()
    trainer.optimizer_step()


def _time_iterations(trainer: Any, iters: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        _step(trainer)
    _sync(device)
    return (time.perf_counter() - t0) / iters


def _measured_evaluations(trainer: Any) -> float:
    """Samples through the student network in one training step, per sample of the batch."""
    seen = [0]

    def hook(module, args, output):
        seen[0] += args[0].shape[0]

    handle = trainer.s.model.net.register_forward_hook(hook)
    try:
        _step(trainer)
    finally:
        handle.remove()
    return seen[0] / trainer.cfg.train.batch


def _step_peak_memory(trainer: Any, device: torch.device) -> tuple[float | None, str]:
    """Peak bytes allocated during one training step above what existed before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the torch profiler's memory timeline
    (every tensor allocation and free inside the step), whose maximum is the step's peak.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _step(trainer)
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base), "cuda max_memory_allocated"
    try:
        import logging

        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        logging.getLogger("torch.profiler").setLevel(logging.ERROR)
        with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof:
            _step(trainer)
        timeline = MemoryProfileTimeline(prof._memory_profile())
        _, sizes = timeline._coalesce_timeline(torch.device("cpu"))
        totals = np.asarray(sizes, dtype=np.float64).sum(axis=1)
        return float(totals.max() - totals[0]), "torch.profiler memory timeline (CPU)"
    except Exception as e:  # private profiler API: report, do not fail the benchmark
        return None, f"unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def scheme_cost(
    settings: BenchSettings, device: torch.device, log: Callable[[str], None] = _log_default
) -> dict[str, Any]:
    """Part 3: time per iteration, evaluations per sample and peak step memory, as ratios to upwind."""
    nets = ["mlp", "unet"]
    skipped: dict[str, str] = {}
    if device.type == "cuda" and _songunet_available():
        nets.append("ddpmpp")
    else:
        skipped["ddpmpp"] = (
            "needs --device cuda" if device.type != "cuda" else "odedistill.teachers.networks"
        )
    s = settings
    out: dict[str, Any] = {
        "timing": (
            f"median over {s.cost_repeats} interleaved rounds of {s.cost_iters} iterations "
            f"(after {s.cost_warmup} warm-up), forward + backward + optimiser step, teacher included"
        ),
        "N": s.cost_N,
        "nets": {},
        "skipped": skipped,
    }
    for net in nets:
        with _open_all(net, device, s) as trainers:
            first = trainers[SCHEME_NAMES[0]]
            params = sum(p.numel() for p in first.s.model.parameters())
            batch = first.cfg.train.batch
            evals, memory, method = {}, {}, ""
            for name, tr in trainers.items():
                for _ in range(s.cost_warmup):
                    _step(tr)
                evals[name] = _measured_evaluations(tr)
                memory[name], method = _step_peak_memory(tr, device)
            times: dict[str, list[float]] = {name: [] for name in trainers}
            for r in range(s.cost_repeats):  # interleave, rotating who goes first
                order = SCHEME_NAMES[r % 3 :] + SCHEME_NAMES[: r % 3]
                for name in order:
                    times[name].append(_time_iterations(trainers[name], s.cost_iters, device))
        med = {name: statistics.median(v) for name, v in times.items()}
        rows = {}
        for name in SCHEME_NAMES:
            mem, mem0 = memory[name], memory[SCHEME_NAMES[0]]
            rows[name] = {
                "ms_per_iteration": 1e3 * med[name],
                "ms_rounds": [1e3 * v for v in times[name]],
                "time_ratio": med[name] / med[SCHEME_NAMES[0]],
                "evaluations_declared": SCHEMES[name].evaluations,
                "evaluations_measured": evals[name],
                "peak_step_memory_mib": None if mem is None else mem / 2**20,
                "memory_ratio": None if mem is None or not mem0 else mem / mem0,
            }
        out["nets"][net] = {
            "label": _NET_LABELS[net].format(s=s),
            "parameters": params,
            "batch": batch,
            "memory_method": method,
            "schemes": rows,
        }
        log(
            f"  cost {net}: "
            + ", ".join(
                f"{n} {rows[n]['ms_per_iteration']:.1f} ms (x{rows[n]['time_ratio']:.2f})"
                for n in SCHEME_NAMES
            )
        )
    return out


_NET_LABELS = {
    "mlp": "MLP width {s.cost_mlp_width} depth {s.cost_mlp_depth}, 2-D ring teacher",
    "unet": "SmallUNet {s.cost_unet_channels} ch (1, 2), attention, 1x8x8 digits teacher",
    "ddpmpp": "DDPM++ CIFAR-10 SongUNet (55.7M), 3x32x32, 16-component mixture teacher",
}


@contextmanager
def _open_all(net: str, device: torch.device, s: BenchSettings) -> Iterator[dict[str, Any]]:
    """One trainer per scheme for ``net``, all alive at once (so timing rounds can interleave)."""
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(_cost_trainer(net, name, device, s)) for name in SCHEME_NAMES
        }


# ------------------------------------------------------------------------- 4. stability
def image_statistics(x: torch.Tensor, x_exact: torch.Tensor | None = None) -> dict[str, float]:
    """Contrast and spread of one-step image samples (before clamping).

    ``saturated``: fraction of pixels with |x| > 1; ``far_saturated``: |x| > 1.25 (the data
    never goes there); ``std``: standard deviation of all pixel values (contrast);
    ``std_across_samples``: per-pixel std over samples, averaged (diversity).
    """
    x = x.double()
    out = {
        "saturated": (x.abs() > SATURATION).double().mean().item(),
        "far_saturated": (x.abs() > FAR_SATURATION).double().mean().item(),
        "std": x.std().item(),
        "std_across_samples": x.std(dim=0).mean().item(),
        "mean_abs": x.abs().mean().item(),
        "max_abs": x.abs().max().item(),
    }
    if x_exact is not None:
        out["rel_error"] = relative_error(x, x_exact)
    return out


def stability(
    settings: BenchSettings, device: torch.device, log: Callable[[str], None] = _log_default
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Part 4: image statistics of one-step samples at checkpoints while each scheme trains.

    Returns the results and the final samples (plus exact endpoints and data) for a picture.
    """
    from odedistill.training import build
    from odedistill.training.config import from_dict

    s = settings
    sections = {"system": {"kind": "probability_flow"}, "teacher": {"preset": "digits"}}
    cpu_system = build.build_system(from_dict(sections), torch.device("cpu"))
    gen = torch.Generator().manual_seed(2024)
    z = cpu_system.sample_initial(s.stab_samples, gen, dtype=torch.float64)
    t0 = time.perf_counter()
    x_exact = solve_reference(cpu_system, z, rtol=s.stab_reference_tol, atol=s.stab_reference_tol)
    ref_seconds = time.perf_counter() - t0
    data = cpu_system.sample_data(s.stab_samples, gen).double()
    steps = sorted(
        {round(s.stab_iterations * k / (s.stab_checkpoints - 1)) for k in range(s.stab_checkpoints)}
    )
    out: dict[str, Any] = {
        "teacher": "exact denoiser of the 1797 scikit-learn digits (1x8x8 in [-1, 1]), std 0.05",
        "student": f"SmallUNet {s.stab_channels} channels, mult (1, 2), attention at 4x4",
        "iterations": s.stab_iterations,
        "batch": s.stab_batch,
        "N": s.stab_N,
        "optimizer": f"Adam lr {s.stab_lr:g} constant, no EMA, squared L2",
        "samples": s.stab_samples,
        "checkpoints": steps,
        "saturation_threshold": SATURATION,
        "far_saturation_threshold": FAR_SATURATION,
        "reference": {
            "exact_endpoints": image_statistics(x_exact, x_exact),
            "data": image_statistics(data),
            "reference_seconds": ref_seconds,
            "reference_tol": s.stab_reference_tol,
        },
        "schemes": {},
    }
    pictures: dict[str, torch.Tensor] = {"exact endpoint": x_exact[:64], "data": data[:64]}
    student = {
        "net": "unet",
        "channels": s.stab_channels,
        "channel_mult": [1, 2],
        "attention": True,
    }
    for scheme in SCHEME_NAMES:
        raw = _recipe(
            sections, scheme, s.stab_N, "karras", student, s.stab_batch, s.stab_lr, s.seed
        )
        track: list[dict[str, Any]] = []
        with _trainer(raw, device) as trainer:
            model = trainer.s.model

            def checkpoint(step: int, loss: float, model=model, track=track) -> None:
                with torch.no_grad():
                    x = model.sample(z.float().to(device)).double().cpu()
                track.append({"step": step, "loss": loss, **image_statistics(x, x_exact)})

            info = _train(
                trainer,
                s.stab_iterations,
                s.stab_lr,
                cosine=False,
                checkpoints=dict.fromkeys(steps, checkpoint),
            )
            with torch.no_grad():
                pictures[scheme] = model.sample(z[:64].float().to(device)).double().cpu()
        out["schemes"][scheme] = {"track": track, **info}
        last = track[-1]
        log(
            f"  stability {scheme:8s} step {last['step']}: saturated {last['saturated']:.3f} "
            f"far {last['far_saturated']:.4f} std {last['std']:.3f} error {last['rel_error']:.3f} "
            f"{info['seconds']:.1f}s"
        )
    return out, pictures


# ------------------------------------------------------------------------------ driver
def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, memory, load, GPU and library versions of this machine."""
    import scipy

    import odedistill

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass
    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(device if device.type == "cuda" else 0)
    try:
        sklearn_version = __import__("sklearn").__version__
    except ImportError:
        sklearn_version = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "memory_gib": mem_gib,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "odedistill": odedistill.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit_learn": sklearn_version,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def resolve_bench_device(device: str) -> torch.device:
    """'cpu' or 'cuda' (the latter only where a GPU is visible); anything else is a UserError."""
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no GPU is available; use --device cpu")
    return torch.device(device)


def default_command(quick: bool, device: str, out: str | Path) -> str:
    """The command line that reproduces a run, as the CLI or benchmarks/schemes.py spells it."""
    prog = Path(sys.argv[0]).as_posix() if sys.argv and sys.argv[0] else ""
    if prog.endswith("benchmarks/schemes.py"):
        head = ["python", "benchmarks/schemes.py"]
    else:
        head = ["odedistill", "bench", "schemes"]
    args = (["--quick"] if quick else []) + ["--device", device, "--out", str(out)]
    return shlex.join(head + args)


def run_scheme_benchmark(
    quick: bool = False,
    device: str = "cpu",
    out: str | Path = "runs/bench-schemes",
    command: str | None = None,
    settings: BenchSettings | None = None,
    log: Callable[[str], None] = _log_default,
) -> dict[str, Any]:
    """Run the four parts and write report.md, results.json and the plots into ``out``.

    Args:
        quick: the small preset (a few minutes on two CPU cores) instead of the full one.
        device: 'cpu' or 'cuda'.
        out: the output folder (created; files in it are overwritten).
        command: the command line recorded in the report (built from the arguments if None).
        settings: explicit settings instead of the preset (tests use smaller ones).
        log: where progress lines go (stderr by default).

    Returns:
        The results, as written to results.json.
    """
    from odedistill.bench.report import write_report

    dev = resolve_bench_device(device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or (BenchSettings.quick() if quick else BenchSettings.full())
    threads_before = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(settings.threads)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = _dt.datetime.now(_dt.timezone.utc)
    t_all = time.perf_counter()
    parts: dict[str, float] = {}
    try:
        log(f"scheme benchmark ({settings.preset}) on {dev}, writing to {out}")

        t = time.perf_counter()
        log("1/4 derivative accuracy on closed-form trajectories")
        derivative = derivative_accuracy(settings)
        parts["derivative"] = time.perf_counter() - t

        t = time.perf_counter()
        log("2/4 distillation accuracy against N")
        distill = distillation_accuracy(settings, dev, log)
        parts["distillation"] = time.perf_counter() - t

        t = time.perf_counter()
        log("3/4 cost per iteration")
        cost = scheme_cost(settings, dev, log)
        parts["cost"] = time.perf_counter() - t

        t = time.perf_counter()
        log("4/4 stability on 8x8 digit images")
        stab, pictures = stability(settings, dev, log)
        parts["stability"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads_before)
    wall = time.perf_counter() - t_all
    results = {
        "meta": {
            "benchmark": "residual schemes (issue 6)",
            "preset": settings.preset,
            "command": command or default_command(quick, device, out),
            "date": started.isoformat(timespec="seconds"),
            "wall_seconds": wall,
            "part_seconds": parts,
            "device": str(dev),
            "torch_threads": settings.threads if dev.type == "cpu" else threads_before,
            "load_average_before": list(load_before) if load_before else None,
            "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "machine": machine_info(dev),
            "settings": dataclasses.asdict(settings),
        },
        "derivative": derivative,
        "distillation": distill,
        "cost": cost,
        "stability": stab,
    }
    write_report(results, out, pictures)
    log(f"done in {wall:.0f} s: {out / 'report.md'}")
    return results
