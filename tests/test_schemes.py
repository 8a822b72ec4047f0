"""Residual schemes: convergence orders on analytic trajectories, gradients through every scheme."""

import math

import pytest
import torch

from odedistill import (
    MLP,
    FlowMap,
    LinearODE,
    Parametrisation,
    karras_grid,
    make_scheme,
    uniform_grid,
)
from odedistill.distances import SquaredL2
from odedistill.loss import pid_loss
from odedistill.schemes import three_point_weights
from tests.problems import AnalyticTrajectory


def max_derivative_error(scheme_name: str, grid: torch.Tensor) -> float:
    model = AnalyticTrajectory(float(grid[0]), float(grid[-1]))
    N = grid.shape[0]
    idx = torch.arange(N)
    z = torch.linspace(-1, 1, N, dtype=torch.float64)[:, None]
    t, y, v = make_scheme(scheme_name)(model.path(z), grid, idx)
    assert torch.equal(t, grid)
    torch.testing.assert_close(y, model(z, t), rtol=0, atol=0)
    return (v - model.derivative(z, t)).abs().max().item()


def fitted_order(scheme_name: str, make) -> float:
    Ns = [40, 80, 160, 320, 640]
    errs = [max_derivative_error(scheme_name, make(N)) for N in Ns]
    # slope of log(err) against log(N); error ~ N^-p
    x = torch.log(torch.tensor(Ns, dtype=torch.float64))
    y = torch.log(torch.tensor(errs, dtype=torch.float64))
    return -(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


@pytest.mark.parametrize("grid", ["karras", "uniform"])
@pytest.mark.parametrize("scheme,order", [("upwind", 1), ("central", 2)])
def test_finite_difference_order(scheme, order, grid):
    def make(N):
        return karras_grid(N, 80.0, 0.002) if grid == "karras" else uniform_grid(N, 80.0, 0.002)

    p = fitted_order(scheme, make)
    assert abs(p - order) < 0.15, f"{scheme} on {grid} grid: fitted order {p:.3f}"


def test_autodiff_is_exact():
    err = max_derivative_error("autodiff", karras_grid(50, 80.0, 0.002))
    assert err < 1e-14


def test_three_point_weights_exact_on_quadratics():
    g = torch.Generator().manual_seed(0)
    nodes = torch.sort(torch.rand(100, 3, generator=g, dtype=torch.float64), dim=1).values
    for m in range(3):  # at each node: central for m = 1, one-sided at the ends
        at = nodes[:, m]
        w = three_point_weights(nodes, at)
        a, b, c = 0.3, -1.7, 2.5
        f = a * nodes**2 + b * nodes + c
        est = w[0] * f[:, 0] + w[1] * f[:, 1] + w[2] * f[:, 2]
        torch.testing.assert_close(est, 2 * a * at + b, rtol=1e-9, atol=1e-9)


def test_central_uses_one_sided_stencils_at_the_ends():
    grid = karras_grid(12, 80.0, 0.002)
    model = AnalyticTrajectory()
    z = torch.zeros(2, 1, dtype=torch.float64)
    idx = torch.tensor([0, 11])
    # a quadratic in t is differentiated exactly at the two ends
    model.forward = lambda z, t, cond=None: (0.5 * t**2 - 3 * t + 1)[:, None] + 0 * z
    t, y, v = make_scheme("central")(model.path(z), grid, idx)
    torch.testing.assert_close(v[:, 0], t - 3, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["upwind", "central", "autodiff"])
@pytest.mark.parametrize("fused", [True, False])
def test_gradients_reach_every_parameter(name, fused):
    torch.manual_seed(0)
    system = LinearODE()
    model = FlowMap.for_system(MLP((2,), width=32, depth=2), system, two_times=False)
    grid = karras_grid(20, system.t_start, system.t_end)
    z = system.sample_initial(16)
    idx = torch.randint(0, 20, (16,))
    loss = pid_loss(model, system, make_scheme(name, fused), SquaredL2(), grid, z, idx).mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize("name", ["upwind", "central"])
def test_fused_equals_separate(name):
    torch.manual_seed(0)
    system = LinearODE()
    model = FlowMap.for_system(MLP((2,), width=32, depth=2), system, two_times=False).double()
    grid = karras_grid(20, system.t_start, system.t_end)
    z = system.sample_initial(16, dtype=torch.float64)
    idx = torch.randint(0, 20, (16,))
    losses, grads = [], []
    for fused in (True, False):
        model.zero_grad()
        loss = pid_loss(model, system, make_scheme(name, fused), SquaredL2(), grid, z, idx).mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_autodiff_through_attention_student():
    from odedistill import SmallUNet

    torch.manual_seed(0)
    net = SmallUNet((1, 8, 8), channels=8, channel_mult=(1, 2), attention=True)
    model = FlowMap(net, 80.0, 0.002, Parametrisation.edm(0.5), two_times=False)
    assert model.c_in == 1 / math.sqrt(80**2 + 0.25)
    grid = karras_grid(10, 80.0, 0.002)
    z = torch.randn(3, 1, 8, 8) * 80
    idx = torch.tensor([0, 4, 9])
    t, y, v = make_scheme("autodiff")(model.path(z), grid, idx)
    # compare with a central finite difference in s = ln t (the net's time input), in float64
    m64 = model.double()
    t64, z64 = t.double(), z.double()
    h = 1e-5
    fd = (m64(z64, t64 * math.exp(h)) - m64(z64, t64 * math.exp(-h))) / (2 * h)
    fd = fd / t64[:, None, None, None]
    t, y, v = make_scheme("autodiff")(m64.path(z64), grid, idx)
    torch.testing.assert_close(v, fd, rtol=1e-5, atol=1e-6 * v.abs().max().item())
    v.square().mean().backward()
    assert all(p.grad is not None for p in m64.parameters())
    assert net.mid_attn.qkv.weight.grad.abs().sum() > 0
