"""Library entry point: distil any ODESystem into a one-step student with a few keyword arguments."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from odedistill.infra.build import build_session
from odedistill.infra.recipes import from_dict
from odedistill.models.boundary import BoundaryTrajectory
from odedistill.models.nets import MLP, SmallUNet
from odedistill.systems.base import ODESystem
from odedistill.training.trainer import Trainer


def distill(
    system: ODESystem,
    net: nn.Module | None = None,
    *,
    scheme: str = "upwind",
    N: int = 100,
    grid: str = "karras",
    rho: float = 7.0,
    distance: str = "l2",
    iterations: int = 2000,
    batch: int = 256,
    lr: float = 1e-3,
    optimizer: str = "radam",
    ema_rate: float = 0.99,
    seed: int = 0,
    device: str = "cpu",
    run_dir: str | Path | None = None,
    progress: bool = True,
) -> BoundaryTrajectory:
    """Train a boundary-exact student x(z, t) of ``system`` with the PID loss and return it.

    Args:
        system: the ODE (any ``ODESystem``).
        net: the network F(x, c_noise, class_labels=None); by default an MLP (vectors) or a
            small UNet (C x H x W states).
        scheme: 'upwind' (PID), 'central' or 'autodiff'.
        N, grid, rho: the collocation grid ('karras' needs non-negative times; 'uniform').
        distance: 'l2', 'pseudo_huber' or 'lpips'.
        iterations, batch, lr, optimizer: the optimisation ('radam' or 'adam').
        ema_rate: the returned model holds these EMA weights.
        seed: seeds the network and the noise stream.
        run_dir: where metrics.jsonl and checkpoints go (a temporary folder by default).

    Returns:
        The EMA student, in eval mode; ``student.sample(z)`` is the one-step solution.
    """
    cfg = from_dict(
        {
            "run": {"seed": seed, "device": device},
            "scheme": {"kind": scheme, "N": N, "grid": grid, "rho": rho},
            "loss": {"distance": distance},
            "optim": {"name": optimizer, "lr": lr},
            "train": {
                "iterations": iterations,
                "batch": batch,
                "ema_rates": [ema_rate],
                "log_every": max(1, iterations // 50),
                "checkpoint_every": iterations,
            },
            "eval": {"enabled": False},
        },
        source="distill()",
    )
    if net is None:
        torch.manual_seed(seed)
        net = SmallUNet(system.state_shape) if system.is_image else MLP(system.state_shape, 128, 3)
    session = build_session(cfg, system=system, net=net)
    with tempfile.TemporaryDirectory(prefix="odedistill-") as tmp:
        trainer = Trainer(session, Path(run_dir) if run_dir is not None else Path(tmp))
        trainer.run(show_progress=progress)
    return next(iter(session.ema.models.values())).eval()
