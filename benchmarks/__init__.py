"""Benchmarks of odedistill, run from a checkout (not installed with the package).

``python -m benchmarks.schemes`` compares the residual schemes; ``benchmarks/train_step.py``
times one PID iteration of the full EDM networks. See benchmarks/README.md.
"""
