"""Benchmark of the residual schemes (every one in ``odedistill.schemes.SCHEMES``, upwind the reference).

Four parts, one module each, all returning plain JSON-ready dicts:

1. ``derivative``: the schemes' estimate of dx/dt on closed-form trajectories, max error
   against the number N of Karras grid points, and the fitted order (log-log slope).
2. ``distillation``: one-step students trained with each scheme on systems with a known
   solution, at a fixed iteration budget, against N; beside them the teacher's explicit Euler
   with N - 1 steps on the same grid (PID's Theorem 1: a perfect upwind student *is* that
   solver) and Heun on the same grid.
3. ``cost``: wall time of a training iteration (forward, backward, optimiser step), student
   evaluations per sample and peak memory of one step, as ratios to upwind measured in the
   same run with interleaved repeats.
4. ``stability``: the image setting (digits Gaussian-mixture teacher, 1x8x8, SmallUNet
   student): saturated pixels and sample spread of one-step samples at checkpoints during
   training, to show (or not) the drift to high-contrast samples Tee et al. (2024) report
   for the autodiff variant.

Students train through the project's ``Trainer`` on sessions built from validated recipes.
``run_scheme_benchmark`` (``python -m benchmarks.schemes``) runs the four parts and writes
``report.md``, ``results.json`` and PNG plots into a folder (see ``report`` and ``plots``).
"""

from benchmarks.schemes.cost import scheme_cost
from benchmarks.schemes.derivative import derivative_accuracy, fitted_order, max_derivative_error
from benchmarks.schemes.distillation import distillation_accuracy
from benchmarks.schemes.run import main, run_scheme_benchmark
from benchmarks.schemes.settings import REFERENCE, BenchSettings, scheme_names
from benchmarks.schemes.stability import image_statistics, stability

__all__ = [
    "REFERENCE",
    "BenchSettings",
    "derivative_accuracy",
    "distillation_accuracy",
    "fitted_order",
    "image_statistics",
    "main",
    "max_derivative_error",
    "run_scheme_benchmark",
    "scheme_cost",
    "scheme_names",
    "stability",
]
