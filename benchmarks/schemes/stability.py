"""Part 4: saturation and spread of one-step image samples during training, per scheme (the drift of Tee et al. 2024)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.schemes.settings import (
    FAR_SATURATION,
    SATURATION,
    BenchSettings,
    log_default,
    scheme_names,
)
from benchmarks.schemes.training import DIGITS, LossHistory, open_trainer, recipe, train
from odedistill import (
    Hook,
    Trainer,
    build_system,
    config_from_dict,
    relative_error,
    solve_reference,
)


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


class SampleCheckpoints(Hook):
    """At the given steps, the image statistics of the student's one-step samples from ``z``.

    Each point of ``track`` holds the step, the mean loss since the previous point (NaN at
    step 0) and ``image_statistics`` against ``x_exact``. ``start`` records step 0.
    """

    def __init__(self, steps: list[int], z: torch.Tensor, x_exact: torch.Tensor) -> None:
        self.steps = set(steps)
        self.z, self.x_exact = z, x_exact
        self.track: list[dict[str, Any]] = []
        self.losses: list[float] = []

    def start(self, trainer: Trainer) -> None:
        if 0 in self.steps:
            self._record(trainer, 0, math.nan)

    def after_step(self, trainer: Trainer, loss: float) -> None:
        self.losses.append(loss)
        if trainer.step in self.steps:
            self._record(trainer, trainer.step, float(np.mean(self.losses)))
            self.losses = []

    def _record(self, trainer: Trainer, step: int, loss: float) -> None:
        model = trainer.session.model
        with torch.no_grad():
            x = model.sample(self.z.float().to(trainer.session.device)).double().cpu()
        self.track.append({"step": step, "loss": loss, **image_statistics(x, self.x_exact)})


def stability(
    settings: BenchSettings, device: torch.device, log: Callable[[str], None] = log_default
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Part 4: image statistics of one-step samples at checkpoints while each scheme trains.

    Returns the results and the final samples (plus exact endpoints and data) for a picture.
    """
    s = settings
    cpu_system = build_system(config_from_dict(DIGITS), torch.device("cpu"))
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
    for scheme in scheme_names():
        raw = recipe(
            DIGITS,
            scheme,
            s.stab_N,
            "karras",
            student,
            s.stab_batch,
            s.stab_lr,
            s.seed,
            iterations=s.stab_iterations,
        )
        history, checkpoints = LossHistory(), SampleCheckpoints(steps, z, x_exact)
        with open_trainer(raw, device, [history, checkpoints]) as trainer:
            checkpoints.start(trainer)
            info = train(trainer, s.stab_iterations, history)
            with torch.no_grad():
                pictures[scheme] = (
                    trainer.session.model.sample(z[:64].float().to(device)).double().cpu()
                )
        track = checkpoints.track
        out["schemes"][scheme] = {"track": track, **info}
        last = track[-1]
        log(
            f"  stability {scheme:8s} step {last['step']}: saturated {last['saturated']:.3f} "
            f"far {last['far_saturated']:.4f} std {last['std']:.3f} error {last['rel_error']:.3f} "
            f"{info['seconds']:.1f}s"
        )
    return out, pictures
