"""benchmarks.odesuite.lbfgs: the L-BFGS phase lowers the residual on its fixed set, in float32 and float64."""

import copy

import pytest
import torch

import odedistill
from benchmarks.odesuite.lbfgs import collocation, lbfgs_phase, residual_mean


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lbfgs_phase_lowers_the_residual_on_its_set(dtype):
    torch.set_num_threads(1)
    system = odedistill.LinearODE()
    student = odedistill.distill(
        system, iterations=3, tol=0, validate_every=0, max_seconds=0, progress=False
    )
    model = copy.deepcopy(student)
    info = lbfgs_phase(model, system, seconds=0.3, n=128, dtype=dtype)
    assert info["lbfgs_evals"] > 1
    assert info["loss_after"] < 0.9 * info["loss_before"]
    assert all(p.dtype == dtype for p in model.parameters())
    z, c, t = collocation(system, 128, 123, dtype)  # the set lbfgs_phase used
    assert residual_mean(model, system, z, c, t).item() == pytest.approx(info["loss_after"])
