"""Settings of the solver benchmark: the full and quick presets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SolverSettings:
    """What one run measures; every field can be overridden on the command line."""

    #: suite systems (benchmarks/odesuite/systems.py), in report order
    systems: tuple[str, ...] = (
        "lotka",
        "duffing",
        "pendulum3",
        "brusselator",
        "vdp",
        "lorenz",
        "oscillator",
        "kepler",
        "vdp_stiff",
        "neural",
    )
    #: distill()'s budget in process CPU seconds, and its accuracy target where distill() has one
    train_seconds: float = 60.0
    tol: float = 1e-2
    #: distill(student=...): 'pid' (one evaluation), 'flowmap' or 'auto' (where it has one)
    student: str = "pid"
    seed: int = 0
    #: states timed and scored (the vectorised solvers and the student take them all at once)
    n: int = 10_000
    #: states solved one by one with scipy (the time is scaled to n)
    n_per_sample: int = 100
    #: timing repeats (the least CPU time counts)
    repeats: int = 3
    #: nodes per jump of the residual check: None, the default, adapts them per sample
    #: ('defect': 32 doubled up to 512 until the estimate converges; 'linear', 'integral': 64)
    points: int | None = None
    #: fixed nodes, each scored once (cost and ranking beside the adaptive check; even, as
    #: 'defect' also steps on half of them)
    points_sweep: tuple[int, ...] = (16, 32, 64)


PRESETS: dict[str, SolverSettings] = {
    "full": SolverSettings(),
    "quick": SolverSettings(
        systems=("lotka",),
        train_seconds=0.5,
        n=256,
        n_per_sample=4,
        repeats=1,
        points_sweep=(4,),
    ),
}
