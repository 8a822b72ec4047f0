"""Settings of the flow-map benchmark: the systems, their budgets, and the two presets."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from odedistill import SCHEMES

#: the evaluation's numbers of network evaluations (a K-step flow-map sample costs K)
NFES = [1, 2, 4, 8]


def log_default(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class SystemSetting:
    """One system of the benchmark: the built-in recipe it starts from and what is changed."""

    name: str
    recipe: str  # a built-in flow-map recipe; PID students train with student.kind = 'pid'
    overrides: list[str]
    iterations: int
    about: str = ""


def _ring(iterations: int, width: int, depth: int, N: int, heldout: int) -> SystemSetting:
    return SystemSetting(
        "ring",
        "flowmap",
        [
            f"student.width={width}",
            f"student.depth={depth}",
            f"scheme.N={N}",
            f"eval.n_heldout={heldout}",
        ],
        iterations,
        "the quickstart's probability-flow ODE of an exact 8-mode ring mixture, MLP student",
    )


def _digits(iterations: int, channels: int, batch: int, N: int, heldout: int) -> SystemSetting:
    return SystemSetting(
        "digits",
        "digits_flowmap",
        [
            f"student.channels={channels}",
            f"train.batch={batch}",
            f"scheme.N={N}",
            f"eval.n_heldout={heldout}",
            "eval.nfe=[1, 2, 4, 8]",
        ],
        iterations,
        "the probability-flow ODE of an exact mixture on 1x8x8 digit images, small UNet student",
    )


def _pendulum(iterations: int, width: int, depth: int, N: int, heldout: int) -> SystemSetting:
    return SystemSetting(
        "pendulum",
        "flowmap",
        [
            "system.kind='pendulum'",
            "student.skip='none'",
            "scheme.grid='uniform'",
            f"student.width={width}",
            f"student.depth={depth}",
            f"scheme.N={N}",
            f"eval.n_heldout={heldout}",
            "train.ema_rates=[0.99, 0.999]",
        ],
        iterations,
        "a damped pendulum (no diffusion), uniform grid, MLP student",
    )


@dataclass
class FlowMapBenchSettings:
    """Every knob of the flow-map benchmark. ``full()`` and ``quick()`` are the two presets."""

    preset: str = "full"
    seed: int = 0
    threads: int = 1  # torch intra-op threads (1: small networks, shared machines)
    schemes: list[str] = field(default_factory=lambda: SCHEMES.names())
    systems: list[SystemSetting] = field(default_factory=list)
    # cost: interleaved timing rounds of PID and flow-map steps, on each system's settings
    cost_warmup: int = 2
    cost_repeats: int = 5
    cost_iters: int = 10

    @classmethod
    def full(cls) -> FlowMapBenchSettings:
        return cls(
            systems=[
                _ring(3000, 128, 3, 250, 1000),
                _digits(400, 16, 64, 100, 256),
                _pendulum(3000, 128, 3, 64, 1000),
            ]
        )

    @classmethod
    def quick(cls) -> FlowMapBenchSettings:
        return cls(
            preset="quick",
            systems=[
                _ring(30, 32, 1, 20, 128),
                _digits(3, 8, 8, 20, 16),
                _pendulum(30, 32, 1, 20, 128),
            ],
            cost_warmup=1,
            cost_repeats=2,
            cost_iters=2,
        )
