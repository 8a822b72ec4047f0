"""A first-order residual's limit: a student with zero upwind residual is the teacher's Euler
through the collocation grid (PID's Theorem 1, tests/test_theorem1.py); the evaluation
measures that Euler solution and says when a student is at it."""

from __future__ import annotations

import pytest
import torch

from odedistill.evaluation.report import FLOOR_FACTOR, evaluate, floor_message, scheme_floor
from odedistill.grids import make_grid
from odedistill.infra.build import build_session
from odedistill.infra.recipes import load_config
from tests.problems import GridTrajectory

PENDULUM = [
    "system.kind='pendulum'",
    "scheme.grid='uniform'",
    "scheme.N=9",
    "eval.n_heldout=64",
    "eval.nfe=[2]",
    "train.ema_rates=[]",
]


class EulerStudent(GridTrajectory):
    """The zero-upwind-loss student of the held-out states: their Euler steps through the grid."""

    def __init__(self, system, grid, z):
        GridTrajectory.__init__(self, grid, z, GridTrajectory.euler(system, grid, z).states)
        self.unused = torch.nn.Parameter(torch.zeros(()))  # evaluate() reads its device


def euler_student_report(scheme: str) -> dict:
    cfg = load_config("quickstart", [*PENDULUM, f"scheme.kind='{scheme}'"])
    system = build_session(cfg, torch.device("cpu")).system
    gen = torch.Generator().manual_seed(cfg.eval.seed)
    z = system.sample_initial(cfg.eval.n_heldout, gen, dtype=torch.float64)  # evaluate()'s own
    grid = make_grid("uniform", cfg.scheme.N, system.t_start, system.t_end).double()
    report, _ = evaluate(cfg, system, {"raw": EulerStudent(system, grid, z)}, "raw")
    return report


@pytest.mark.parametrize("scheme", ["upwind", "central"])
def test_the_grid_euler_solution_is_reported_as_the_first_order_floor(scheme):
    report = euler_student_report(scheme)
    s, floor = report["samplers"], report["scheme_floor"]
    euler_error = s["teacher_euler_8"]["trajectory_rel_error"]
    assert euler_error > 1e-3  # 8 Euler steps over the pendulum's [0, 1]: far from exact
    assert s["student"]["trajectory_rel_error"] == pytest.approx(euler_error, rel=1e-9)
    assert floor["grid_euler_steps"] == 8 and floor["grid_euler_rel_error"] == euler_error
    if scheme == "upwind":
        assert floor["order"] == 1 and floor["at_floor"]
        note = floor_message(floor)
        assert note is not None
        assert "8-step collocation grid" in note and "scheme.kind = 'central'" in note
    else:  # a second-order scheme's optimum is not that Euler solution: no note
        assert floor["order"] == 2 and not floor["at_floor"]
        assert floor_message(floor) is None


def test_the_floor_is_judged_on_the_best_sampler_against_the_measured_euler_error():
    samplers = euler_student_report("upwind")["samplers"]
    euler_error = samplers["teacher_euler_8"]["trajectory_rel_error"]
    above = {**samplers, "student": {"trajectory_rel_error": 1.01 * FLOOR_FACTOR * euler_error}}
    assert not scheme_floor("upwind", above, 8)["at_floor"]
    # a multi-step sampler at the Euler error puts the student at the floor
    at = {**above, "student@2": {"trajectory_rel_error": euler_error}}
    assert scheme_floor("upwind", at, 8)["at_floor"]
    assert not scheme_floor("autodiff", at, 8)["at_floor"]
