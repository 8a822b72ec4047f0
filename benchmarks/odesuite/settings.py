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
    #: only systems whose N is at most this differ from the defaults (None: all)
    max_N: int | None = None


#: the ablation: distill()'s defaults, each option switched off alone, and distill() before
VARIANTS: dict[str, Variant] = {
    "defaults": Variant("distill()'s defaults"),
    "no_causal": Variant("without causal weighting (loss.causal_eps = 0)", {"causal_eps": 0.0}),
    "no_normalise": Variant(
        "without state/condition standardisation (student.normalise = false)",
        {"normalise": False},
    ),
    "raw_time": Variant(
        "time input t itself, frequencies 1..64 (student.time = 'raw')", {"time_input": "raw"}
    ),
    "constant_lr": Variant(
        "constant learning rate, no warm-up (optim.schedule = 'constant', optim.warmup = 0)",
        {"schedule": "constant", "warmup": 0},
    ),
    "upwind": Variant(
        "upwind at every N (no 'auto' rule: differs only where N <= 32)",
        {"scheme": "upwind"},
        max_N=32,
    ),
    "causal_30": Variant(
        "stronger causal weighting (loss.causal_eps = 30; distill()'s default since it won here "
        "and in the 60 s table)",
        {"causal_eps": 30.0},
    ),
    "output_scale": Variant(
        "the MLP's output scaled by the states' mean and std (student.normalise_output = true; "
        "with causal_eps = 10, the defaults of the rest of this ablation)",
        {"normalise_output": True, "causal_eps": 10.0},
    ),
    "stop_at_target": Variant(
        "distill()'s defaults with stop_at_ratio = 1.5 (the early-stopping part, not the ablation)",
        {"stop_at_ratio": 1.5},
    ),
    "before": Variant(
        "distill() before the suite: upwind, constant lr, no causal weights, raw inputs, "
        "MLP without the condition",
        {"scheme": "upwind", "schedule": "constant", "warmup": 0, "causal_eps": 0.0},
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
    budget: float = 60.0  # process CPU seconds of training steps per system
    seeds: list[int] = field(default_factory=lambda: [0])
    # the ablation
    ablation_budget: float = 20.0
    ablation_seed: int = 0
    variants: list[str] = field(
        default_factory=lambda: [v for v in VARIANTS if v != "stop_at_target"]
    )
    # evaluation
    test_n: int = 1000  # held-out test states per system (seed test_seed)
    test_seed: int = 1001
    validate_every: int = 250  # validation checks inside distill() (outside the clock)
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
            variants=["defaults", "upwind"],
            test_n=64,
            validate_every=5,  # a check even where a step takes 100 ms (1 s budget)
        )
