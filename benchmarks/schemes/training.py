"""Students of the benchmark: recipes of its systems, the project's ``Trainer`` on them, and a training run's summary."""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.schemes.settings import BenchSettings
from odedistill import (
    Hook,
    ODESystem,
    Trainer,
    TrainingDiverged,
    UserError,
    build_session,
    config_from_dict,
)

#: the recipe sections of the digits teacher (1x8x8 images)
DIGITS = {"system": {"kind": "probability_flow"}, "teacher": {"preset": "digits"}}


def system_recipe(system: str, settings: BenchSettings) -> tuple[dict[str, Any], str]:
    """The recipe sections of a benchmark system and the grid it is distilled on."""
    if system == "ring":
        teacher = {"preset": "ring", "modes": 8, "radius": 1.0, "std": settings.ring_std}
        return {"system": {"kind": "probability_flow"}, "teacher": teacher}, "karras"
    if system == "linear":
        return {"system": {"kind": "linear"}}, "uniform"
    if system == "pendulum":
        return {"system": {"kind": "pendulum"}}, "uniform"
    raise UserError(f"unknown benchmark system {system!r}; expected ring, linear or pendulum")


def recipe(
    system_sections: dict[str, Any],
    scheme: str,
    N: int,
    grid: str,
    student: dict[str, Any],
    batch: int,
    lr: float,
    seed: int,
    iterations: int | None = None,
    schedule: str = "constant",
) -> dict[str, Any]:
    """A recipe (as parsed from TOML): Adam at ``lr`` with ``schedule``, squared L2, no EMA.

    With ``iterations`` the run is that long (the cosine schedule decays to 0 at its end) and
    logs and checkpoints once, at the end.
    """
    train: dict[str, Any] = {"batch": batch, "ema_rates": []}
    if iterations is not None:
        train.update(iterations=iterations, log_every=iterations, checkpoint_every=iterations)
    return {
        **system_sections,
        "run": {"seed": seed},
        "student": student,
        "scheme": {"kind": scheme, "N": N, "grid": grid},
        "loss": {"distance": "l2"},
        "optim": {"name": "adam", "lr": lr, "schedule": schedule},
        "train": train,
    }


@contextmanager
def open_trainer(
    raw: dict[str, Any],
    device: torch.device,
    hooks: list[Hook] | None = None,
    *,
    system: ODESystem | None = None,
    net: nn.Module | None = None,
) -> Iterator[Trainer]:
    """A ``Trainer`` for the recipe ``raw`` (validated through the config) in a temporary run folder.

    ``system`` and ``net`` replace the recipe's (``build_session``).
    """
    cfg = config_from_dict(raw, source="scheme benchmark")
    session = build_session(cfg, device, system=system, net=net)
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        yield Trainer(session, Path(tmp), hooks=hooks)


class LossHistory(Hook):
    """Every step's training loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_step(self, trainer: Trainer, loss: float) -> None:
        self.losses.append(loss)


def train(trainer: Trainer, iterations: int, history: LossHistory) -> dict[str, Any]:
    """Run ``trainer`` for ``iterations`` steps (``history`` must be one of its hooks).

    Returns ``diverged_at`` (the step whose loss was not finite, or None), the training
    ``seconds`` and ``final_loss``: the mean loss of the last tenth of the steps, or the
    non-finite loss of a diverged run.
    """
    t0 = time.perf_counter()
    try:
        trainer.run(iterations=iterations, show_progress=False)
    except TrainingDiverged as e:
        return {
            "diverged_at": trainer.step + 1,  # the step whose loss was not finite
            "seconds": time.perf_counter() - t0,
            "final_loss": _diverged_loss(e),
        }
    tail = history.losses[-max(1, iterations // 10) :] or [float("nan")]
    return {
        "diverged_at": None,
        "seconds": time.perf_counter() - t0,
        "final_loss": float(np.mean(tail)),
    }


def _diverged_loss(error: TrainingDiverged) -> float:
    """The non-finite loss a ``TrainingDiverged`` reports ('loss became nan at step k; ...')."""
    found = re.search(r"loss became (\S+) at step", str(error))
    try:
        return float(found.group(1)) if found else math.nan
    except ValueError:
        return math.nan
