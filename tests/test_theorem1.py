"""PID's Theorem 1: the loss vanishes on a trajectory made of the teacher's own Euler steps."""

import pytest
import torch

from odedistill import ProbabilityFlowODE, karras_grid, make_scheme, pid_loss, ring_mixture
from odedistill.distances import SquaredL2
from tests.problems import GridTrajectory


@pytest.fixture
def setting():
    system = ProbabilityFlowODE(ring_mixture(8, 1.0, 0.05), (2,))
    grid = karras_grid(40, system.t_start, system.t_end)
    z = system.sample_initial(64, torch.Generator().manual_seed(0), dtype=torch.float64)
    return system, grid, z


@pytest.mark.parametrize("fused", [True, False])
def test_loss_is_zero_on_euler_steps(setting, fused):
    system, grid, z = setting
    model = GridTrajectory.euler(system, grid, z)
    N = grid.shape[0]
    for i in range(N - 1):  # every index with a forward neighbour
        idx = torch.full((z.shape[0],), i)
        loss = pid_loss(model, system, make_scheme("upwind", fused), SquaredL2(), grid, z, idx)
        assert loss.max() < 1e-20, f"i={i}: {loss.max()}"


def test_perfect_student_reproduces_euler_endpoint(setting):
    from odedistill import euler

    system, grid, z = setting
    model = GridTrajectory.euler(system, grid, z)
    torch.testing.assert_close(model.sample(z), euler(system, z, grid), rtol=0, atol=0)


def test_loss_is_not_zero_otherwise(setting):
    system, grid, z = setting
    N = grid.shape[0]
    states = GridTrajectory.euler(system, grid, z).states.clone()
    # the backward difference at the last point does not see an Euler step from t_{N-1}
    model = GridTrajectory(grid, z, states)
    idx = torch.full((z.shape[0],), N - 1)
    assert pid_loss(model, system, make_scheme("upwind"), SquaredL2(), grid, z, idx).min() > 1e-12
    # nudge one interior state: the residuals at its index and the one before become non-zero
    k = N // 2
    states[k] += 1e-3
    model = GridTrajectory(grid, z, states)
    for i, expect_zero in [(k - 1, False), (k, False), (k - 3, True)]:
        idx = torch.full((z.shape[0],), i)
        loss = pid_loss(model, system, make_scheme("upwind"), SquaredL2(), grid, z, idx)
        assert (loss.max() < 1e-20) == expect_zero, i
