"""Library entry point: distil any ODESystem into a one-step student with a few keyword arguments."""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from odedistill.infra.build import build_session
from odedistill.infra.recipes import from_dict
from odedistill.models.boundary import BoundaryTrajectory
from odedistill.systems.base import ODESystem
from odedistill.systems.probability_flow import ProbabilityFlowODE
from odedistill.training.trainer import Trainer

#: N at or below which scheme = 'auto' takes the second-order central scheme (the odesuite:
#: on coarse grids the discretisation error dominates; above, central costs 1.3x per step for
#: no gain)
CENTRAL_UP_TO_N = 32


def auto_scheme(N: int) -> str:
    """'central' for N <= 32, else 'upwind' (benchmarks/results/odesuite)."""
    return "central" if N <= CENTRAL_UP_TO_N else "upwind"


def distill(
    system: ODESystem,
    net: nn.Module | None = None,
    *,
    scheme: str = "auto",
    N: int = 100,
    grid: str = "auto",
    rho: float = 7.0,
    distance: str = "l2",
    iterations: int = 2000,
    batch: int = 256,
    lr: float = 1e-3,
    optimizer: str = "radam",
    schedule: str = "cosine",
    warmup: int = 200,
    ema_rate: float = 0.99,
    causal_eps: float = 30.0,
    target_grad: str = "stop",
    times: str = "grid",
    normalise: bool = True,
    normalise_output: bool = False,
    time_input: str = "unit",
    width: int = 128,
    depth: int = 3,
    validate_every: int | None = None,
    stop_at_ratio: float = 0.0,
    max_seconds: float = 0.0,
    clock: str = "wall",
    seed: int = 0,
    device: str = "cpu",
    run_dir: str | Path | None = None,
    progress: bool = True,
) -> BoundaryTrajectory:
    """Train a boundary-exact student x(z, t) of ``system`` with the PID loss and return it.

    The defaults are those that won on the odesuite benchmark (benchmarks/results/odesuite).

    Args:
        system: the ODE (any ``ODESystem``; continuous conditions from ``sample_condition``
            reach the student).
        net: the network F(x, c_noise, class_labels=None); by default an MLP of ``width`` x
            ``depth`` (vectors, built with the system's ``label_dim``) or a small UNet
            (C x H x W states).
        scheme: 'auto' (central for N <= 32, else upwind), 'upwind' (PID), 'central' or
            'autodiff'.
        N, grid, rho: the collocation grid: 'auto' (Karras for the probability-flow ODE, else
            uniform), 'uniform' or 'karras' (needs non-negative times).
        distance: 'l2', 'pseudo_huber' or 'lpips'.
        iterations, batch, lr, optimizer: the optimisation ('radam' or 'adam').
        schedule, warmup: learning rate: ``warmup`` linear steps, then 'cosine' to 0,
            'linear' or 'constant'.
        ema_rate: the returned model holds these EMA weights.
        causal_eps: causal weighting of the residual along time (0 = off).
        normalise, time_input: the default MLP standardises its state and condition inputs
            from the system's samplers; 'unit' feeds it tau = (t - t_start)/(t_end - t_start)
            ('raw': the time itself). ``normalise_output`` scales the MLP's output by the
            states' mean and std.
        validate_every: iterations between checks of the student against the reference
            solution (val_ratio = its error / Euler's with N - 1 steps, in metrics.jsonl and
            the progress bar); default 250 for vector states, 0 (off) for images.
        stop_at_ratio: stop once two consecutive checks read val_ratio <= this (0 = never).
        max_seconds, clock: stop after this many 'wall' or 'process' (CPU) seconds of training
            steps (0 = no limit); the schedule then decays over the time budget.
        seed: seeds the network and the noise stream.
        run_dir: where metrics.jsonl and checkpoints go (a temporary folder by default).

    Returns:
        The EMA student, in eval mode; ``student.sample(z, cond)`` is the one-step solution.
    """
    if scheme == "auto":
        scheme = auto_scheme(N)
    if grid == "auto":
        grid = "karras" if isinstance(system, ProbabilityFlowODE) else "uniform"
    if validate_every is None:
        validate_every = 0 if system.is_image else 250
    cfg = from_dict(
        {
            "run": {"seed": seed, "device": device},
            "student": {
                "net": "unet" if system.is_image else "mlp",
                "width": width,
                "depth": depth,
                "normalise": normalise,
                "normalise_output": normalise_output,
                "time": time_input,
            },
            "scheme": {"kind": scheme, "N": N, "grid": grid, "rho": rho, "times": times},
            "loss": {"distance": distance, "causal_eps": causal_eps, "target_grad": target_grad},
            "optim": {
                "name": optimizer,
                "lr": lr,
                "schedule": schedule,
                "warmup": min(warmup, iterations),
                "foreach": True,
            },
            "train": {
                "iterations": iterations,
                "batch": batch,
                "ema_rates": [ema_rate],
                "log_every": max(1, iterations // 50),
                "checkpoint_every": iterations,
                "validate_every": validate_every,
                "stop_at_ratio": stop_at_ratio,
                "max_seconds": max_seconds,
                "clock": clock,
            },
            "eval": {"enabled": False},
        },
        source="distill()",
    )
    session = build_session(cfg, system=system, net=net)
    with tempfile.TemporaryDirectory(prefix="odedistill-") as tmp:
        trainer = Trainer(session, Path(run_dir) if run_dir is not None else Path(tmp))
        trainer.run(show_progress=progress)
    return next(iter(session.ema.models.values())).eval()
