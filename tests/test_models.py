"""Trajectory models and distances: exact boundary condition, distance formulas."""

import math

import pytest
import torch

from odedistill import (
    MLP,
    BoundaryTrajectory,
    LinearODE,
    ProbabilityFlowODE,
    PseudoHuber,
    SmallUNet,
    SquaredL2,
    ring_mixture,
)
from odedistill.errors import UserError


@pytest.mark.parametrize("kind", ["pf", "linear"])
def test_boundary_condition_is_exact(kind):
    torch.manual_seed(0)
    if kind == "pf":
        system = ProbabilityFlowODE(ring_mixture(), (2,))
    else:
        system = LinearODE()
    model = BoundaryTrajectory.for_system(MLP((2,), 64, 2), system)
    z = system.sample_initial(100)
    t = torch.full((100,), system.t_start)
    assert torch.equal(model(z, t), z)
    # and it is the network's (scaled) output where the weight of z vanishes
    t0 = torch.full((100,), model.t_anchor)
    if model.t_anchor > 0 or kind == "linear":
        F = model.net(model.c_in * z, model.c_noise(t0))
        torch.testing.assert_close(model(z, t0), F)


def test_pid_parametrisation_of_the_probability_flow_ode():
    system = ProbabilityFlowODE(ring_mixture(), (2,), t_max=80.0, sigma_data=0.5)
    model = BoundaryTrajectory.for_system(MLP((2,), 32, 1), system)
    assert model.c_in == pytest.approx(1 / math.sqrt(0.25 + 6400))
    t = torch.tensor([80.0, 1.0, 0.002])
    torch.testing.assert_close(model.weight(t), t / 80)
    torch.testing.assert_close(model.c_noise(t), torch.log(t) / 4)


def test_unet_shapes_and_divisibility():
    net = SmallUNet((3, 16, 16), channels=8, channel_mult=(1, 2, 2))
    assert net(torch.randn(2, 3, 16, 16), torch.rand(2)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="divisible"):
        SmallUNet((1, 6, 6), channel_mult=(1, 2, 2))


def test_distances_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    d2 = ((a - b) ** 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(SquaredL2()(a, b), d2 / 75)
    c = 0.00054 * math.sqrt(75)
    torch.testing.assert_close(PseudoHuber()(a, b), torch.sqrt(d2 + c * c) - c)
    torch.testing.assert_close(PseudoHuber(0.1)(a, b), torch.sqrt(d2 + 0.01) - 0.1)
    assert PseudoHuber()(a, a).abs().max() == 0


def test_lpips_without_the_package_names_the_fix():
    try:
        import lpips  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("lpips is importable here")
    from odedistill import LPIPS

    with pytest.raises(UserError, match=r"odedistill\[lpips\]"):
        LPIPS()
