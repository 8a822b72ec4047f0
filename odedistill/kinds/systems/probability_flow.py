"""system.kind = 'probability_flow': dx/dt = (x − D(x; t))/t of the teacher's denoiser, from T down to ε."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import SystemKind, Teacher
from odedistill.systems.probability_flow import ProbabilityFlowODE


@dataclass
class ProbabilityFlowOptions:
    t_max: float = _f(
        80.0,
        "T, where the ODE starts: z ~ N(0, T^2 I); with a diffusers teacher at most the "
        "schedule's largest sigma",
        lo=0,
        lo_open=True,
        hi=1e4,
    )
    t_min: float = _f(
        0.002,
        "epsilon, where it ends and one-step samples are read: > 0 (with a diffusers teacher "
        "at least the schedule's smallest sigma)",
        lo=0,
        hi=1e4,
    )
    sigma_data: float = _f(
        0.5, "sigma_data of the preconditioning (student c_in)", lo=0, lo_open=True, hi=1e3
    )


def check_interval(t_min: float, t_max: float, source: str) -> None:
    if t_min >= t_max:
        raise UserError(f"{source}: 'system.t_min' must be smaller than 'system.t_max'")


class ProbabilityFlowKind(SystemKind):
    """the probability-flow ODE of the teacher's denoiser, from system.t_max to t_min.

    EDM's probability-flow ODE with σ(t) = t (Karras et al. 2022, eq. 4).
    """

    config = ProbabilityFlowOptions
    capabilities = frozenset({"needs_teacher"})

    def check(self, options: ProbabilityFlowOptions, cfg: Any, source: str) -> None:
        check_interval(options.t_min, options.t_max, source)
        if options.t_min == 0:
            raise UserError(
                f"{source}: 'system.t_min' must be > 0 for the probability-flow ODE (its vector "
                "field divides by t); PID uses 0.002"
            )

    def build(
        self, options: ProbabilityFlowOptions, cfg: Any, teacher: Teacher | None
    ) -> ProbabilityFlowODE:
        assert teacher is not None
        o = options
        return ProbabilityFlowODE(
            teacher.denoiser, teacher.state_shape, o.t_max, o.t_min, o.sigma_data, teacher.label_dim
        )
