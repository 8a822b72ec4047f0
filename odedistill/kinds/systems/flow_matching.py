"""system.kind = 'flow_matching': dx/dt = v(x, t) of x_t = (1 − t)·x0 + t·ε, from t_max (≤ 1) down to t_min."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import SystemKind, Teacher
from odedistill.kinds.systems.probability_flow import check_interval
from odedistill.systems.flow_matching import FlowMatchingODE


@dataclass
class FlowMatchingOptions:
    t_max: float = _f(
        1.0, "where the ODE starts: at most 1 (1 = pure noise)", lo=0, lo_open=True, hi=1e4
    )
    t_min: float = _f(0.0, "where it ends and one-step samples are read: >= 0", lo=0, hi=1e4)


class FlowMatchingKind(SystemKind):
    """the rectified-flow ODE x_t = (1 - t) x0 + t eps of the teacher's velocity.

    The rectified-flow ODE of a teacher that gives a velocity (capability ``"velocity"``).
    """

    config = FlowMatchingOptions
    capabilities = frozenset({"needs_teacher"})

    def check(self, options: FlowMatchingOptions, cfg: Any, source: str) -> None:
        check_interval(options.t_min, options.t_max, source)
        if options.t_max > 1:
            raise UserError(
                f"{source}: 'system.t_max' = {options.t_max:g} exceeds 1, where the flow-matching "
                "interpolation (1 - t) x0 + t eps is pure noise; set system.t_max = 1.0"
            )

    def build(
        self, options: FlowMatchingOptions, cfg: Any, teacher: Teacher | None
    ) -> FlowMatchingODE:
        assert teacher is not None
        if teacher.denoiser is not None and teacher.velocity is None:
            raise UserError(
                f"system.kind = 'flow_matching' needs a flow-matching velocity, which "
                f"teacher.kind = 'gaussian_mixture' gives (exactly); teacher.kind = "
                f"'{cfg.teacher.kind}' is a denoiser: use system.kind = 'probability_flow'"
            )
        o = options
        return FlowMatchingODE(
            teacher.velocity, teacher.state_shape, o.t_max, o.t_min, teacher.label_dim
        )
