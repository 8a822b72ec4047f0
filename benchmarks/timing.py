"""Training iterations of several trainers timed side by side, for cost ratios taken in one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any


def interleaved_step_medians(
    trainers: Mapping[str, Any],
    warmup: int,
    repeats: int,
    iters: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per iteration (``train_step`` and ``optimizer_step``) of each trainer.

    Every trainer first runs ``warmup`` iterations; then ``repeats`` rounds time ``iters``
    iterations of each in turn, so that a change in the machine's load falls on all of them.
    ``clock``: wall (``time.perf_counter``) or CPU (``time.process_time``) seconds.
    """
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.train_step()
            trainer.optimizer_step()
    rounds: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(repeats):
        for k, trainer in trainers.items():
            c0 = clock()
            for _ in range(iters):
                trainer.train_step()
                trainer.optimizer_step()
            rounds[k].append((clock() - c0) / iters)
    return {k: statistics.median(v) for k, v in rounds.items()}
