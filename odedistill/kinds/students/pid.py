"""PID's one-time student (``student.kind = "pid"``): x(z, t) from the initial state, sampled in one step."""

from __future__ import annotations

from odedistill.kinds.base import StudentKind


class PIDStudent(StudentKind):
    """x(z, t) from the initial state, one-step sampling (PID)."""

    capabilities = frozenset({"causal"})
