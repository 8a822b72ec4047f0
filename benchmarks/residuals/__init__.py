"""The residual-family benchmark: Lagrangian, Eulerian and semigroup flow maps at equal CPU time."""

from benchmarks.residuals.run import main, run_residual_benchmark
from benchmarks.residuals.settings import NFES

__all__ = ["NFES", "main", "run_residual_benchmark"]
