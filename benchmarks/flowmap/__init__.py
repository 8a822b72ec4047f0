"""Benchmark of flow-map students: error against NFE (1, 2, 4, 8) for the flow map, the PID
student and the teacher's Euler and Heun, on the ring and digits probability-flow ODEs and a
damped pendulum, with every residual scheme; the cost per iteration as a ratio to PID.

``python -m benchmarks.flowmap [--quick] [--systems ...] [--out DIR]`` writes ``report.md``,
``results.json`` and ``error_vs_nfe.png``.
"""

from benchmarks.flowmap.run import main, run_flowmap_benchmark, step_cost, train_and_evaluate
from benchmarks.flowmap.settings import NFES, FlowMapBenchSettings, SystemSetting

__all__ = [
    "NFES",
    "FlowMapBenchSettings",
    "SystemSetting",
    "main",
    "run_flowmap_benchmark",
    "step_cost",
    "train_and_evaluate",
]
