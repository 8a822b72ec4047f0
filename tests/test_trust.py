"""The a-posteriori check: zero residual for exact students, the linearised error equal to the true
error on a linear ODE (one jump and K jumps), the defect indicator's fourth order and its exactness
on a nonlinear ODE far from the linear regime, Grönwall's bound, and the solver fallback."""

from __future__ import annotations

import sys

import pytest
import torch

from odedistill import (
    MLP,
    AccuracyWarning,
    FlowMap,
    LinearODE,
    ODESystem,
    UserError,
    solve_reference,
)
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


class Logistic(ODESystem):
    """x' = x (1 − x) on [0, 2], componentwise: x*(t) = x0 / (x0 + (1 − x0) e^{−t})."""

    t_start, t_end, state_shape = 0.0, 2.0, (2,)

    def f(self, x, t, cond=None):
        return x * (1 - x)

    def exact_solution(self, z, t):
        return z / (z + (1 - z) * torch.exp(-t)[:, None])

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return 0.1 + 0.8 * torch.rand((n, 2), generator=generator, dtype=dtype)


@pytest.mark.parametrize("kind", ["defect", "linear", "integral"])
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


def test_defect_indicator_is_fourth_order_on_a_linear_ode(z):
    """Richardson's extrapolation of two trapezoid passes: the indicator's own error falls as
    h⁴ (16x per halving), against h² (4x) for the single 'linear' pass, on a path whose error
    sin(5 τ) ε z is no polynomial the trapezoid rule integrates exactly."""

    class Wavy(TrajectoryModel):
        t_start, t_end = SYSTEM.t_start, SYSTEM.t_end

        def forward(self, z, t, cond=None):
            tau = ((t - self.t_start) / (self.t_end - self.t_start))[:, None]
            return SYSTEM.exact_solution(z, t) + 1e-2 * torch.sin(5 * tau) * z

    model = Wavy().attach(SYSTEM)
    t_end = torch.full((z.shape[0],), SYSTEM.t_end, dtype=z.dtype)
    err = (model.sample(z) - SYSTEM.exact_solution(z, t_end)).norm(dim=1)

    def miss(points, kind):
        return float(((model.residual(z, points=points, kind=kind) - err).abs() / err).max())

    defect = [miss(p, "defect") for p in (16, 32, 64)]
    linear = [miss(p, "linear") for p in (16, 32, 64)]
    for coarse, fine in zip(defect[:-1], defect[1:], strict=True):
        assert 13 < coarse / fine < 18
    for coarse, fine in zip(linear[:-1], linear[1:], strict=True):
        assert 3.8 < coarse / fine < 4.2
    assert defect[-1] < 1e-6 < 1e-4 < linear[-1]


def test_adaptive_defect_refines_until_the_estimate_holds(z):
    """A path whose error oscillates fast, sin(150 τ) ε z: on the 32 and 64 nodes a fixed check
    starts and stops at, the extrapolation is far off; the default check (points=None) doubles
    the nodes of each sample until two extrapolations agree, and lands on the true error."""

    class Fast(TrajectoryModel):
        t_start, t_end = SYSTEM.t_start, SYSTEM.t_end

        def forward(self, z, t, cond=None):
            tau = ((t - self.t_start) / (self.t_end - self.t_start))[:, None]
            return SYSTEM.exact_solution(z, t) + 1e-2 * (torch.sin(150 * tau) + tau) * z

    model = Fast().attach(SYSTEM)
    t_end = torch.full((z.shape[0],), SYSTEM.t_end, dtype=z.dtype)
    err = (model.sample(z) - SYSTEM.exact_solution(z, t_end)).norm(dim=1)
    for points in (32, 64):
        assert ((model.residual(z, points=points) - err).abs() / err).max() > 0.5
    error, nodes = model.residual(z, with_nodes=True)
    assert torch.allclose(error, err, rtol=1e-2)
    assert (nodes > 64).all() and (nodes <= 512).all()
    assert torch.equal(model.sample(z, check=True).error, error)
    # each sample's estimate is the fixed check's at the nodes it stopped at (the coarser
    # passes it reuses from the levels before are the same passes)
    assert_same_as_fixed_checks(model, z, error, nodes)
    easy = ExactTrajectory(SYSTEM, 1e-2).attach(SYSTEM)  # a smooth path: done at the start
    assert (easy.residual(z, with_nodes=True)[1] == 32).all()


def test_adaptive_defect_says_when_its_estimate_has_not_settled(z):
    """A path off by ε |τ − 1/3|^½ z, whose velocity is infinite at τ = 1/3: no trapezoid rule
    reaches its h⁴ regime, the extrapolations' gaps shrink too slowly to settle, and an
    AccuracyWarning names the samples; the nodes given are the most."""

    class Rough(TrajectoryModel):
        t_start, t_end = SYSTEM.t_start, SYSTEM.t_end

        def forward(self, z, t, cond=None):
            tau = ((t - self.t_start) / (self.t_end - self.t_start))[:, None]
            return SYSTEM.exact_solution(z, t) + 1e-2 * (tau - 1 / 3).abs().sqrt() * z

    with pytest.warns(
        AccuracyWarning, match=f"{z.shape[0]} of {z.shape[0]} samples had not settled"
    ):
        _, nodes = Rough().attach(SYSTEM).residual(z, with_nodes=True)
    assert (nodes == 512).all()


def test_defect_indicator_is_exact_where_the_linearisation_is_not():
    """A path 30 % off the logistic trajectory in mid-course and 2 % off at the end: e' =
    ∂_t x − f(x − e) holds exactly, so the defect indicator finds |x(T) − x*(T)|; the
    linearised equation misses it by its O(|e|²) term."""
    system = Logistic()
    z = system.sample_initial(16, torch.Generator().manual_seed(1), dtype=torch.float64)

    class Off(TrajectoryModel):
        t_start, t_end = system.t_start, system.t_end

        def forward(self, z, t, cond=None):
            tau = (t / system.t_end)[:, None]
            return system.exact_solution(z, t) + (1.2 * tau * (1 - tau) + 0.02 * tau) * z

    model = Off().attach(system)
    err = (model.sample(z) - system.exact_solution(z, torch.full((16,), 2.0))).norm(dim=1)
    defect = model.residual(z, kind="defect", points=128)
    linear = model.residual(z, kind="linear", points=128)
    assert torch.allclose(defect, err, rtol=1e-4)
    assert ((linear - err).abs() / err).max() > 0.2


def test_a_check_that_is_not_finite_reads_as_infinite_error(z):
    """f = −√x is nan below 0: samples whose path stays there are flagged, never nan."""

    class Root(LinearODE):
        def f(self, x, t, cond=None):
            return -x.sqrt()

    class Still(TrajectoryModel):
        t_start, t_end = SYSTEM.t_start, SYSTEM.t_end

        def forward(self, z, t, cond=None):
            return z + 0 * t[:, None]

    model = Still().attach(Root(t_start=0.0, t_end=1.5))
    n = z.shape[0]
    error = model.residual(torch.cat([z.abs() + 4, -z.abs() - 4]))  # √ of the truth stays real
    assert error[:n].isfinite().all() and error[n:].isinf().all()


def test_a_singular_implicit_step_reads_as_infinite_error_and_raises_nothing(z):
    """x' = 64 x on [0, 1]: on 32 steps the trapezoid rule's Newton matrix I − (h/2) J is
    exactly zero. The samples checked there read as not checkable (infinite), never an
    exception; on more steps the same exact student is checked and reads 0 (to rounding,
    relative to its end state, e^64 times its start)."""
    system = LinearODE(t_start=0.0, t_end=1.0, A=[[64.0, 0.0], [0.0, 64.0]])
    model = ExactTrajectory(system).attach(system)
    size = model.sample(z).norm(dim=1)
    # 'defect' on 64 nodes also steps on 32; 'linear' steps on its nodes only
    for kind, singular, fine in (("defect", 64, 128), ("linear", 32, 64)):
        assert model.residual(z, points=singular, kind=kind).isinf().all()
        assert (model.residual(z, points=fine, kind=kind) < 1e-9 * size).all()
    assert model.residual(z).isinf().all()  # the adaptive check starts on 32


def test_flow_map_error_is_carried_across_jumps(z):
    times = [0.0, 0.4, 0.9, 1.5]
    fm = ExactFlowMap(SYSTEM, 1e-2).attach(SYSTEM)
    err = true_error(fm, z, steps=3, times=times)
    assert torch.allclose(fm.residual(z, steps=3, times=times, points=64), err, rtol=1e-3)
    error, nodes = fm.residual(z, steps=3, times=times, with_nodes=True)  # adaptive
    assert torch.allclose(error, err, rtol=1e-2)
    assert_same_as_fixed_checks(fm, z, error, nodes, steps=3, times=times)


def assert_same_as_fixed_checks(model, z, error, nodes, **sampler):
    for M in nodes.unique().tolist():
        rows = nodes == M
        fixed = model.residual(z[rows], points=M, kind="defect", **sampler)
        torch.testing.assert_close(error[rows], fixed, rtol=1e-10, atol=0)


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
