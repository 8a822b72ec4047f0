"""Benchmarks of the toolkit's choices; ``schemes`` compares the residual schemes (issue 6)."""

from odedistill.bench.schemes import BenchSettings, run_scheme_benchmark

__all__ = ["BenchSettings", "run_scheme_benchmark"]
