"""Settings of the scheme benchmark: the two presets, the schemes compared, the saturation thresholds."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from odedistill import SCHEMES

#: the scheme every ratio is taken to (PID's first-order upwind difference)
REFERENCE = "upwind"

#: pixels beyond this magnitude are called saturated (the clamp of one-step image samples)
SATURATION = 1.0
#: pixels beyond this are far outside the data: the digits mixture has std 0.05 around [-1, 1]
FAR_SATURATION = 1.25


def scheme_names() -> list[str]:
    """Every registered residual scheme (``odedistill.schemes.SCHEMES``), the reference first."""
    names = SCHEMES.names()
    return [REFERENCE] + [n for n in names if n != REFERENCE]


def scheme_help() -> dict[str, str]:
    """Each scheme's one-line help from the registry, in the order of ``scheme_names()``."""
    helps = {e.name: e.help for e in SCHEMES.entries()}
    return {n: helps[n] for n in scheme_names()}


def declared_order(name: str) -> float | None:
    """The scheme's order of accuracy in the grid spacing; None for an exact derivative."""
    order = SCHEMES.get(name).order
    return None if order == float("inf") else order


def log_default(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    cost_memory: bool = True  # peak step memory (on the CPU through torch's profiler)
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
            distill_iterations=50,
            distill_batch=128,
            distill_width=32,
            distill_heldout=100,
            cost_N=50,
            cost_mlp_width=64,
            cost_mlp_depth=2,
            cost_mlp_batch=128,
            cost_unet_channels=8,
            cost_unet_batch=8,
            cost_ddpmpp_batch=8,
            cost_warmup=1,
            cost_repeats=3,
            cost_iters=3,
            cost_memory=False,
            stab_iterations=16,
            stab_batch=8,
            stab_channels=8,
            stab_N=50,
            stab_checkpoints=3,
            stab_samples=32,
            stab_reference_tol=1e-4,
        )
