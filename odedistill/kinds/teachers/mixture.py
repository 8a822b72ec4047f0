"""teacher.kind = 'gaussian_mixture': the exact denoiser (and flow-matching velocity) of a Gaussian mixture."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import Teacher, TeacherFamily
from odedistill.teachers.gaussian_mixture import (
    GaussianMixtureVelocity,
    digits_mixture,
    grid_mixture,
    ring_mixture,
)

#: the most mixture components a preset may build (the grid preset has modes² of them)
MAX_MODES = 4096


@dataclass
class MixtureOptions:
    preset: str = _f(
        "ring",
        "mixture means: 'ring' (2-D), 'grid' (2-D) or 'digits' (1x8x8)",
        choices=("ring", "grid", "digits"),
    )
    modes: int = _f(8, "ring: number of modes; grid: modes per side (at most 64)", lo=1, hi=4096)
    radius: float = _f(1.0, "ring radius, or grid spacing", lo=0, lo_open=True, hi=1e3)
    std: float = _f(0.05, "standard deviation of every mixture component", lo=0, hi=1e3)
    count: int = _f(0, "digits: how many images become means (0 = all 1797)", lo=0, hi=1797)


class MixtureFamily(TeacherFamily):
    """exact denoiser of a Gaussian mixture (teacher.preset), and its flow-matching velocity.

    D(x; σ) = E[x0 | x0 + σn = x] in closed form for x0 ~ Σ_k w_k N(μ_k, s_k² I), and its
    flow-matching velocity E[ε − x0 | x_t]: the exact teacher of the toy problems.
    """

    config = MixtureOptions
    capabilities = frozenset({"velocity"})

    def check(self, options: MixtureOptions, cfg: Any, source: str) -> None:
        if options.preset == "grid" and options.modes**2 > MAX_MODES:
            raise UserError(
                f"{source}: 'teacher.modes' = {options.modes} makes a grid of "
                f"{options.modes**2} modes; the grid preset takes at most "
                f"{math.isqrt(MAX_MODES)} per side ({MAX_MODES} modes)"
            )

    def build(self, options: MixtureOptions, cfg: Any, device: torch.device) -> Teacher:
        if options.preset == "ring":
            D = ring_mixture(options.modes, options.radius, options.std)
        elif options.preset == "grid":
            D = grid_mixture(options.modes, options.radius, options.std)
        else:
            D = digits_mixture(options.count, options.std)
        D = D.to(device)
        return Teacher(D, D.state_shape, 0, GaussianMixtureVelocity(D))
