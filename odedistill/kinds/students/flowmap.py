"""The flow-map student (``student.kind = "flowmap"``): X(x_s, s, t), sampled in 1 or more jumps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import StudentKind


@dataclass
class FlowMapConfig:
    p_T: float = _f(0.25, "fraction of each batch with s = t_start: the plain PID term", lo=0, hi=1)
    steps: list[int] = _f(
        [2, 4, 8],
        "the multi-step samplers the map is trained for and evaluated with: K steps on grid "
        "points round(m (N - 1) / K)",
        item=dict(lo=2, hi=1000),
    )
    sources: str = _f(
        "sampler",
        "where s is drawn: 'sampler' (the inner points of the steps' sub-grids, with t up to "
        "the next point a sampler jumps to) or 'uniform' (any grid point, t anywhere after it)",
        choices=("sampler", "uniform"),
    )
    source_state: str = _f(
        "student",
        "x_s = sg X(z, t_start, s) of the current 'student' (one extra forward, no gradient), "
        "of the first 'ema', or the 'teacher''s Euler steps along the grid (exact on the grid, "
        "but up to N - 1 teacher calls per iteration)",
        choices=("student", "ema", "teacher"),
    )
    skip: str = _f(
        "auto",
        "the skip term inside the map, F = a(s) x_s + b(s) NN (identity plus a small "
        "correction from small s): 'auto' (the teacher's own c_skip, c_out where the system has "
        "them: EDM, VP, VE, diffusers; EDM's for an exact mixture), 'edm' (EDM's with "
        "system.sigma_data) or 'none'",
        choices=("auto", "edm", "none"),
    )


class FlowMapStudent(StudentKind):
    """X(x_s, s, t) from any time s to a later t, sampled in 1 or more steps (student.steps, student.p_T, ...)."""

    help = (
        "X(x_s, s, t) from any time s to a later t, sampled in 1 or more steps "
        "(student.steps, student.p_T, ...)"
    )
    config = FlowMapConfig
    capabilities = frozenset({"multi_step", "two_times"})

    def check(self, options: FlowMapConfig, cfg: Any, source: str) -> None:
        if options.sources == "sampler" and not options.steps:
            raise UserError(
                f"{source}: 'student.steps' is empty; student.sources = 'sampler' draws from "
                "the steps' sub-grids: give at least one K (e.g. [2, 4]) or use sources = "
                "'uniform'"
            )
        N = cfg.scheme.N
        if any(k > N - 1 for k in options.steps):
            raise UserError(
                f"{source}: 'student.steps' {options.steps} needs K <= scheme.N - 1 = {N - 1}"
            )
