"""The odesuite benchmark (issue 13): distill() on seven nonlinear ODEs, its final table and ablation."""

from benchmarks.odesuite.run import main, run_suite
from benchmarks.odesuite.settings import VARIANTS, SuiteSettings
from benchmarks.odesuite.systems import SUITE

__all__ = ["SUITE", "VARIANTS", "SuiteSettings", "main", "run_suite"]
