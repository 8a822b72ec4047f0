"""The solver-replacement benchmark: a distilled student against scipy and torch RK4 at equal error, and its a-posteriori check."""

from benchmarks.solver.run import main, run_benchmark
from benchmarks.solver.settings import PRESETS, SolverSettings

__all__ = ["PRESETS", "SolverSettings", "main", "run_benchmark"]
