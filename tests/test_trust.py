"""The a-posteriori check: zero residual for exact students, the linearised error equal to the true
error on a linear ODE (one jump and K jumps), Grönwall's bound, and the solver fallback."""

from __future__ import annotations

import sys

import pytest
import torch

from odedistill import MLP, FlowMap, LinearODE, UserError, solve_reference
from odedistill.infra.students import rebuild_system
from odedistill.models.base import TrajectoryModel
from odedistill.models.parametrisation import Parametrisation

pytestmark = pytest.mark.usefixtures("one_thread")
SYSTEM = LinearODE(t_start=0.0, t_end=1.5)


def bump(s, t, t0, t1):
    """A perturbation of the path that is 0 at its start s and grows with (t - s)."""
    tau = (t - s) / (t1 - t0)
    return tau * (1 - tau) + tau**2


class ExactTrajectory(TrajectoryModel):
    """x(z, t) = expm(A (t - t0)) z + eps bump(t) z: the exact solution for eps = 0."""

    def __init__(self, system: LinearODE, eps: float = 0.0) -> None:
        super().__init__()
        self.s, self.eps = system, eps
        self.t_start, self.t_end = system.t_start, system.t_end

    def forward(self, z, t, cond=None):
        b = bump(self.t_start, t, self.t_start, self.t_end)
        return self.s.exact_solution(z, t) + self.eps * b[:, None] * z


class ExactFlowMap(FlowMap):
    """X(x, s, t) = expm(A (t - s)) x + eps bump x: the exact flow map for eps = 0."""

    def __init__(self, system: LinearODE, eps: float = 0.0) -> None:
        super().__init__(
            torch.nn.Identity(), system.t_start, system.t_end, Parametrisation.plain(9.0)
        )
        self.s, self.eps = system, eps

    def transport(self, x_s, s, t, cond=None):
        Phi = torch.linalg.matrix_exp((t - s)[:, None, None] * self.s.A.to(x_s))
        b = bump(s, t, self.t_start, self.t_end)
        return torch.einsum("bij,bj->bi", Phi, x_s) + self.eps * b[:, None] * x_s


@pytest.fixture(scope="module")
def z():
    return SYSTEM.sample_initial(12, torch.Generator().manual_seed(0), dtype=torch.float64)


def true_error(model, z, **kw):
    return (model.sample(z, **kw) - solve_reference(SYSTEM, z)).norm(dim=1)


@pytest.mark.parametrize("kind", ["linear", "integral"])
def test_an_exact_student_has_zero_residual(z, kind):
    model = ExactTrajectory(SYSTEM).attach(SYSTEM)
    assert model.residual(z, kind=kind).max() < 1e-12
    fm = ExactFlowMap(SYSTEM).attach(SYSTEM)
    times = [0.0, 0.5, 1.5]
    assert fm.residual(z, steps=2, times=times, kind=kind).max() < 1e-12


def test_linear_indicator_is_the_true_error_on_a_linear_ode(z):
    """e' = A e + r is exact for a linear f: the indicator is |x(T) - x*(T)| up to O(h^2)."""
    for eps in (1e-3, 1e-2):
        model = ExactTrajectory(SYSTEM, eps).attach(SYSTEM)
        err = true_error(model, z)
        assert torch.allclose(model.residual(z, points=64), err, rtol=1e-3)
        # Grönwall with L = 0 bounds it here (A's symmetric part is -0.5 I: a contraction)
        assert (model.residual(z, kind="integral") >= err).all()
    small = ExactTrajectory(SYSTEM, 1e-3).attach(SYSTEM).residual(z)
    large = ExactTrajectory(SYSTEM, 1e-2).attach(SYSTEM).residual(z)
    assert torch.allclose(large, 10 * small, rtol=1e-9)


def test_flow_map_error_is_carried_across_jumps(z):
    times = [0.0, 0.4, 0.9, 1.5]
    fm = ExactFlowMap(SYSTEM, 1e-2).attach(SYSTEM)
    err = true_error(fm, z, steps=3, times=times)
    assert torch.allclose(fm.residual(z, steps=3, times=times, points=64), err, rtol=1e-3)


def test_residual_of_a_network_student_matches_finite_differences(z):
    """The autodiff residual of an MLP student: ∫|r| against central differences on 2001 points."""
    torch.manual_seed(0)
    net = MLP((2,), 16, 2).double()
    for p in net.parameters():
        p.data += 0.3 * torch.randn_like(p)
    model = FlowMap.for_system(net, SYSTEM, SYSTEM.default_parametrisation(), two_times=False)
    model.attach(SYSTEM)
    n = 2000
    t = torch.linspace(SYSTEM.t_start, SYSTEM.t_end, n + 1, dtype=torch.float64)
    with torch.no_grad():
        xs = torch.stack([model(z, t_k.expand(z.shape[0])) for t_k in t])  # (n+1, B, 2)
    h = float(t[1] - t[0])
    v = torch.cat([xs[1:2] - xs[:1], (xs[2:] - xs[:-2]) / 2, xs[-1:] - xs[-2:-1]]) / h
    r = (v - torch.stack([SYSTEM.f(x, None) for x in xs])).norm(dim=2)
    integral = h * (r[1:] + r[:-1]).sum(0) / 2
    got = model.residual(z, kind="integral", points=n)
    assert torch.allclose(got, integral, rtol=1e-3)


def test_fallback_re_solves_exactly_the_flagged_samples(z):
    model = ExactTrajectory(SYSTEM, 1e-2).attach(SYSTEM)
    plain = model.sample(z)
    error = model.residual(z)
    worst = set(torch.topk(error, 3).indices.tolist())
    x, err, resolved = model.sample(z, check=True, fallback="solver", fraction=0.25)
    assert set(resolved.nonzero()[:, 0].tolist()) == worst
    assert torch.equal(err, error)
    idx = resolved.nonzero()[:, 0]
    assert torch.equal(x[idx], solve_reference(SYSTEM, z[idx]))
    assert torch.equal(x[~resolved], plain[~resolved])
    threshold = float(error.median())
    x, err, resolved = model.sample(z, check=True, fallback="solver", threshold=threshold)
    assert torch.equal(resolved, error > threshold)
    checked = model.sample(z, check=True)
    assert torch.equal(checked.x, plain) and not checked.resolved.any()


def test_a_student_without_its_system_asks_for_it(z):
    model = ExactTrajectory(SYSTEM)
    with pytest.raises(UserError, match=r"attach\(YourODE"):
        model.residual(z)
    with pytest.raises(UserError, match="exactly one of threshold"):
        model.sample(z, check=True, fallback="solver", system=SYSTEM)
    assert model.residual(z, system=SYSTEM).max() < 1e-12
    assert "system" not in model.state_dict()


def test_a_student_file_naming_a_user_module_imports_nothing():
    spec = {"system": {"kind": "odedistill_no_such_mod:Decay"}, "state_shape": [2], "label_dim": 0}
    assert rebuild_system(spec, "ckpt") is None
    assert "odedistill_no_such_mod" not in sys.modules
