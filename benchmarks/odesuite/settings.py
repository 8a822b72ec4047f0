"""Settings of the odesuite benchmark: the presets, and the ablation's variants of distill()'s options."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from benchmarks.odesuite.systems import SUITE


@dataclass(frozen=True)
class Variant:
    """A set of distill() keyword arguments against its defaults; ``old_net`` builds the MLP
    as distill() did before the suite (128 x 3, no condition input, raw time)."""

    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    old_net: bool = False


#: the ablation: distill()'s defaults, each option switched alone, and PID's loss
VARIANTS: dict[str, Variant] = {
    "defaults": Variant("distill()'s defaults (student as --student, tol as set)"),
    "pid_only": Variant("one evaluation only (student = 'pid')", {"student": "pid"}),
    "residual_only": Variant(
        "the residual alone, no solved states (solved = 0: distill()'s default before them)",
        {"solved": 0},
    ),
    "hybrid": Variant(
        "solved states and the residual on every sample (residual_fraction = 1)",
        {"residual_fraction": 1.0},
    ),
    "hybrid_quarter": Variant(
        "solved states and the residual on a quarter of each batch (residual_fraction = 0.25)",
        {"residual_fraction": 0.25},
    ),
    "solved_1024": Variant("1024 solved states instead of 4096", {"solved": 1024}),
    "solved_16384": Variant("16384 solved states instead of 4096", {"solved": 16384}),
    "flowmap4": Variant("a flow map of 4 jumps from the start", {"student": "flowmap"}),
    "no_causal": Variant(
        "residual alone, without causal weighting (causal_eps = 0)",
        {"solved": 0, "causal_eps": 0.0},
    ),
    "grid_times": Variant(
        "residual alone, times on the fixed grid of N = 65 points, not continuous",
        {"solved": 0, "times": "grid"},
    ),
    "lr_3e-3": Variant("learning rate 3e-3 (not 1e-3)", {"lr": 3e-3}),
    "stop_grad": Variant(
        "residual alone, PID's stop-gradient target sg[f(x)] (autodiff, continuous times)",
        {"solved": 0, "target_grad": "stop"},
    ),
    "pid_grid": Variant(
        "PID's loss as distill() had it: sg[f], upwind on N = 100 uniform points, one step",
        {"solved": 0, "target_grad": "stop", "scheme": "upwind", "N": 100, "student": "pid"},
    ),
    "hard_states": Variant(
        "residual alone, hard-state replay: half of each batch redrawn from recent points by "
        "their loss",
        {"solved": 0, "hard_states": 0.5},
    ),
    "hard_weighted": Variant(
        "residual alone, hard-state replay with importance weights (the objective's "
        "expectation uniform)",
        {"solved": 0, "hard_states": 0.5, "hard_weighted": True},
    ),
    "no_hard": Variant(
        "residual alone, without hard-state replay (hard_states = 0)",
        {"solved": 0, "hard_states": 0.0},
    ),
    "before": Variant(
        "distill() before the suite: upwind, constant lr, no causal weights, raw inputs, "
        "MLP without the condition, sg[f]",
        {
            "scheme": "upwind",
            "N": 100,
            "target_grad": "stop",
            "schedule": "constant",
            "warmup": 0,
            "causal_eps": 0.0,
            "student": "pid",
            "solved": 0,
        },
        old_net=True,
    ),
}


def log_default(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class SuiteSettings:
    """Every knob of the benchmark. ``full()`` and ``quick()`` are the presets."""

    preset: str = "full"
    systems: list[str] = field(default_factory=lambda: list(SUITE))
    parts: list[str] = field(default_factory=lambda: ["final", "ablation"])
    threads: int = 1  # torch threads: one, as on a shared machine
    target: float = 1.5  # the ratio to Euler(N - 1) every system should reach
    # the final table: distill()'s defaults
    tol: float = 1e-2  # the accuracy asked of every system (norm-relative error)
    student: str = (
        "pid"  # distill()'s default: one evaluation ("auto": a flow map where that misses tol)
    )
    budget: float = 60.0  # process CPU seconds of training steps per system
    seeds: list[int] = field(default_factory=lambda: [0])
    # the ablation
    ablation_budget: float = 20.0
    ablation_seed: int = 0
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    # evaluation
    test_n: int = 1000  # held-out test states per system (seed test_seed)
    test_seed: int = 1001
    # a larger fresh set for the final table: a mean that rare states carry (a heavy tail)
    # moves by 2x between sets of 1000 (0 = none)
    big_n: int = 20_000
    big_seed: int = 7
    validate_every: int = 100  # validation checks inside distill() (outside the clock)
    max_iterations: int = 10**6  # the budget, not the iterations, ends a run

    @classmethod
    def full(cls) -> SuiteSettings:
        return cls()

    @classmethod
    def quick(cls) -> SuiteSettings:
        return cls(
            preset="quick",
            systems=["sir", "lotka"],
            budget=1.0,
            ablation_budget=0.5,
            variants=["defaults", "pid_grid"],
            test_n=64,
            big_n=128,
            validate_every=5,  # a check even where a step takes 100 ms (1 s budget)
        )
