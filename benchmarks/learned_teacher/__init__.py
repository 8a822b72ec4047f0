"""A learned teacher end to end on a CPU: EDM training on the digits, a digits detector for a
Fréchet distance, and PID / flow-map students distilled from the teacher."""

from benchmarks.learned_teacher.run import main

__all__ = ["main"]
