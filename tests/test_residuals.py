"""The three residual families of a flow map against closed forms (float64).

On dx/dt = A x (``LinearODE``) the flow map is X(x, s, t) = e^{A(t − s)} x. The student here is
X_θ(x, s, t) = e^{A(t − s)} x + θ (t − s)² x²: exact at θ = 0, where every residual and its
gradient vanish; at θ ≠ 0 each residual equals its formula written out by hand:
    Eulerian   r_E = d/dh X_θ(x + h A x, s + h, t) = θ[−2(t − s) x² + (t − s)² 2x ⊙ A x]
    Lagrangian r_L = ∂_t X_θ − A X_θ = θ[2(t − s) x² − (t − s)² A x²]
    semigroup  X_θ(x, s, t) − X_θ(X_θ(x, s, u), u, t)  (matrix exponentials composed by hand)
Then the average-velocity form's Eulerian loss is MeanFlow's, and sCM's loss written from the
paper is ours with its options.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

from odedistill import (
    MLP,
    AdaptiveWeight,
    AverageVelocityFlowMap,
    LinearODE,
    ODESystem,
    Parametrisation,
    SquaredL2,
    eulerian_loss,
    eulerian_tangent,
    make_scheme,
    residual_loss,
    semigroup_loss,
)
from odedistill.models.base import Path

SYSTEM = LinearODE()
A = SYSTEM.A
L2 = SquaredL2()
pytestmark = pytest.mark.usefixtures("one_thread")


def expm(tau: torch.Tensor) -> torch.Tensor:
    """e^{A τ} per sample, (B, 2, 2)."""
    return torch.linalg.matrix_exp(tau[:, None, None] * A)


class Perturbed(nn.Module):
    """X_θ(x, s, t) = e^{A(t − s)} x + θ (t − s)² x² (θ = 0: the exact flow map)."""

    def __init__(self, theta: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=torch.float64))

    def forward(self, x, s, t, cond=None):
        tau = t - s
        exact = torch.einsum("bij,bj->bi", expm(tau), x)
        return exact + self.theta * (tau**2)[:, None] * x**2


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    s = torch.rand(16, generator=gen, dtype=torch.float64) * 0.5
    t = s + 0.1 + torch.rand(16, generator=gen, dtype=torch.float64) * 0.4
    frac = torch.rand(16, generator=gen, dtype=torch.float64)
    return x, s, t, frac


def r_eulerian(theta, x, s, t):
    tau = (t - s)[:, None]
    return theta * (-2 * tau * x**2 + tau**2 * 2 * x * SYSTEM.f(x, s))


def r_lagrangian(theta, x, s, t):
    tau = (t - s)[:, None]
    return theta * (2 * tau * x**2 - tau**2 * (x**2) @ A.T)


def composed(theta, x, s, u, t):
    """X_θ(X_θ(x, s, u), u, t) with the matrix exponentials written out."""
    mid = torch.einsum("bij,bj->bi", expm(u - s), x) + theta * ((u - s) ** 2)[:, None] * x**2
    out = torch.einsum("bij,bj->bi", expm(t - u), mid)
    return out + theta * ((t - u) ** 2)[:, None] * mid**2


def lagrangian(model, x, s, t):
    path = Path(lambda t, x, s, cond: model(x, s, t), (x, s, None))
    grid = t.sort().values  # continuous times: the scheme interpolates, so pass positions
    idx = torch.searchsorted(grid, t)
    return residual_loss(path, SYSTEM, make_scheme("autodiff"), L2, grid, idx, through=True)


def losses(model, batch, scheme="autodiff", **kw):
    x, s, t, frac = batch
    return {
        "eulerian": eulerian_loss(model, SYSTEM, make_scheme(scheme), L2, x, s, t, **kw),
        "lagrangian": lagrangian(model, x, s, t),
        "semigroup": semigroup_loss(model, L2, x, s, t, frac),
    }


def test_every_residual_and_its_gradient_vanish_on_the_exact_flow_map(batch):
    model = Perturbed(0.0)
    for name, loss in losses(model, batch).items():
        (grad,) = torch.autograd.grad(loss.sum(), model.theta)
        assert loss.abs().max() < 1e-26 and grad.abs() < 1e-13, (name, loss.max(), grad)


@pytest.mark.parametrize("through", [False, True])
def test_each_residual_of_a_perturbed_map_is_its_formula(batch, through):
    x, s, t, frac = batch
    theta = 0.7
    model = Perturbed(theta)
    got = losses(model, batch, through=through)
    g = (s - t)[:, None] * r_eulerian(theta, x, s, t)  # the shift Δ r_E, Δ = s − t
    u = s + frac * (t - s)
    by_hand = {
        "eulerian": (g**2).mean(1),
        "lagrangian": (r_lagrangian(theta, x, s, t) ** 2).mean(1),
        "semigroup": ((model(x, s, t) - composed(theta, x, s, u, t)) ** 2).mean(1),
    }
    for name in by_hand:
        torch.testing.assert_close(got[name], by_hand[name], rtol=1e-10, atol=1e-14)
    # sCM's stop-gradient: ∇_θ d(X_θ, sg[X_θ − g]) = (2/D) g·∂_θ X_θ, not ∇_θ |g|²/D
    (grad,) = torch.autograd.grad(got["eulerian"].sum(), model.theta)
    dX = ((t - s) ** 2)[:, None] * x**2
    want = (2 * g * (g / theta if through else dX)).mean(1).sum()
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=0)


def fitted_slope(h, err):
    x, y = torch.log(torch.tensor(h)), torch.log(torch.tensor(err))
    return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


@pytest.mark.parametrize("scheme", ["upwind", "central"])
def test_finite_difference_eulerian_residuals_meet_autodiff_at_their_order(batch, scheme):
    x, s, t, _ = batch
    model = Perturbed(0.7)
    f = SYSTEM.f(x, s)
    _, exact = eulerian_tangent(model, x, s, t, f, make_scheme("autodiff"), 0.1, -1.0)
    torch.testing.assert_close(exact, r_eulerian(0.7, x, s, t), rtol=1e-12, atol=1e-14)
    deltas = [0.04, 0.02, 0.01, 0.005]
    errors = [
        (eulerian_tangent(model, x, s, t, f, make_scheme(scheme), d, -1.0)[1] - exact)
        .abs()
        .max()
        .item()
        for d in deltas
    ]
    order = make_scheme(scheme).order
    assert abs(fitted_slope(deltas, errors) - order) < 0.15, (scheme, errors)


def test_tangent_normalisation_and_clipping(batch):
    x, s, t, _ = batch
    model = Perturbed(0.7)
    g = (s - t)[:, None] * r_eulerian(0.7, x, s, t)
    norm = g.norm(dim=1, keepdim=True)
    scheme = make_scheme("autodiff")
    for tangent, c, tamed in (
        ("normalise", 0.1, g / (norm + 0.1)),
        ("clip", 1e-3, g * (1e-3 / norm).clamp(max=1)),
    ):
        got = eulerian_loss(model, SYSTEM, scheme, L2, x, s, t, tangent=tangent, tangent_c=c)
        torch.testing.assert_close(got, (tamed**2).mean(1), rtol=1e-10, atol=1e-16)


@pytest.fixture(scope="module")
def average_velocity_map():
    torch.manual_seed(0)
    net = MLP((2,), 16, 2, two_times=True).double()
    for p in net.parameters():  # away from the zero-initialised output layer
        p.data += 0.3 * torch.randn_like(p)
    return AverageVelocityFlowMap(net, 0.0, 1.0, Parametrisation.plain(-1.0))


def test_the_eulerian_loss_of_the_average_velocity_form_is_meanflows(batch, average_velocity_map):
    x, s, t, _ = batch
    model = average_velocity_map
    assert torch.equal(model.transport(x, s, s), x)
    torch.testing.assert_close(
        model.transport(x, s, t), x - (s - t)[:, None] * model.average_velocity(x, s, t)
    )
    ours = eulerian_loss(
        model.transport,
        SYSTEM,
        make_scheme("autodiff"),
        L2,
        x,
        s,
        t,
        velocity=model.average_velocity,
    )
    # MeanFlow (Geng et al. 2025, eq. 10 with their (t, r) = our (s, t)):
    #   u_tgt = v − (s − t)(v·∂_x u + ∂_s u),  L = |u_θ − sg(u_tgt)|²
    v = SYSTEM.f(x, s)
    with torch.no_grad():
        _, du = jvp(lambda x, s: model.average_velocity(x, s, t), (x, s), (v, torch.ones_like(s)))
    u = model.average_velocity(x, s, t)
    u_tgt = v - (s - t)[:, None] * du
    meanflow = ((u - u_tgt.detach()) ** 2).mean(1)
    torch.testing.assert_close(ours, meanflow, rtol=1e-10, atol=1e-14)
    params = dict(model.named_parameters())
    g_ours = torch.autograd.grad(ours.sum(), list(params.values()))
    g_mf = torch.autograd.grad(meanflow.sum(), list(params.values()))
    for a, b in zip(g_ours, g_mf, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


class TrigFlow(ODESystem):
    """sCM's probability-flow ODE in TrigFlow time, dx/dt = σ_d F_pre(x/σ_d, t) (a fixed F_pre)."""

    t_start, t_end, state_shape = math.pi / 2, 0.0, (2,)

    def __init__(self, sigma_d: float) -> None:
        self.sigma_d = sigma_d
        self.W = torch.tensor([[0.3, -1.1], [0.8, 0.2]], dtype=torch.float64)

    def F_pre(self, x, t):
        return torch.tanh(x @ self.W.T + t[:, None])

    def f(self, x, t, cond=None):
        return self.sigma_d * self.F_pre(x / self.sigma_d, t)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.randn((n, 2), generator=generator, dtype=dtype) * self.sigma_d


def test_scms_loss_from_the_paper_is_ours_with_its_options():
    sigma_d, c = 0.5, 0.1
    system = TrigFlow(sigma_d)
    torch.manual_seed(1)
    F = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2)).double()

    def F_theta(params, x, t):  # F_θ(x/σ_d, t) with explicit weights
        return functional_call(F, params, (torch.cat([x / sigma_d, t[:, None]], 1),))

    params = dict(F.named_parameters())

    def f_theta(x, s, t=None, cond=None):  # sCM's consistency function: the map to time 0
        return torch.cos(s)[:, None] * x - torch.sin(s)[:, None] * sigma_d * F_theta(params, x, s)

    gen = torch.Generator().manual_seed(2)
    s = 0.1 + torch.rand(32, generator=gen, dtype=torch.float64) * 1.3
    x = (
        torch.randn(32, 2, generator=gen, dtype=torch.float64)
        * torch.hypot(torch.cos(s), torch.sin(s))[:, None]
    )
    # Lu & Song (2024), eq. (8)-(9) and sec. 4.2 (tangent normalisation; no adaptive weight,
    # no warmup): with θ⁻ = sg θ and dx_t/dt the teacher's velocity,
    #   g = −cos²t (σ_d F_θ⁻ − dx_t/dt) − cos t sin t (x_t + σ_d dF_θ⁻/dt),  g ← g/(‖g‖ + c)
    #   L = ‖F_θ(x_t/σ_d, t) − F_θ⁻(x_t/σ_d, t) − g‖²
    frozen = {k: p.detach() for k, p in params.items()}
    dxdt = system.f(x, s)
    Fm, dF = jvp(lambda x, t: F_theta(frozen, x, t), (x, s), (dxdt, torch.ones_like(s)))
    cos, sin = torch.cos(s)[:, None], torch.sin(s)[:, None]
    g = -(cos**2) * (sigma_d * Fm - dxdt) - cos * sin * (x + sigma_d * dF)
    g = g / (g.norm(dim=1, keepdim=True) + c)
    scm = ((F_theta(params, x, s) - Fm - g) ** 2).mean(1)

    ours = eulerian_loss(
        f_theta,
        system,
        make_scheme("autodiff"),
        L2,
        x,
        s,
        torch.zeros_like(s),
        tangent="normalise",
        tangent_c=c,
        scale=sigma_d * torch.sin(s) * torch.cos(s),
        beta=-sigma_d * torch.sin(s),
    )
    torch.testing.assert_close(ours, scm, rtol=1e-9, atol=1e-14)
    g_ours = torch.autograd.grad(ours.sum(), list(params.values()))
    g_scm = torch.autograd.grad(scm.sum(), list(params.values()))
    for a, b in zip(g_ours, g_scm, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


MIXED = [
    "system.kind=linear",  # velocities of order 1: the scale an average-velocity network outputs
    "student.kind=flowmap",
    "student.residual=eulerian",
    "student.residual_weights=[0.5,1,0.5]",
    "student.output=average_velocity",
    "student.adaptive_weight=true",
    "scheme.kind=autodiff",
    "train.checkpoint_every=1000",
]


def test_a_mixed_residual_average_velocity_map_resumes_and_reloads(tiny_recipe, tmp_path):
    from odedistill.infra.build import build_session
    from odedistill.infra.recipes import load_config
    from odedistill.infra.students import read_student
    from odedistill.training.trainer import Trainer

    cfg = load_config(tiny_recipe, MIXED)
    straight = Trainer(build_session(cfg), tmp_path / "a")
    straight.run(iterations=12, show_progress=False)
    first = Trainer(build_session(cfg), tmp_path / "b")
    first.run(iterations=6, show_progress=False)
    resumed = Trainer(build_session(cfg), tmp_path / "b")
    resumed.resume()
    resumed.run(iterations=12, show_progress=False)
    a, b = straight.session.model.state_dict(), resumed.session.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(straight.session.model, AverageVelocityFlowMap)
    loaded = read_student(tmp_path / "b", weights="raw").model
    assert isinstance(loaded, AverageVelocityFlowMap)
    assert torch.equal(loaded.loss_weight.weight, b["loss_weight.weight"])
    assert b["loss_weight.weight"].abs().max() > 0  # the weight trained
    z = torch.randn(4, *straight.session.system.state_shape)
    with torch.no_grad():
        assert torch.equal(loaded.sample(z, steps=2), straight.session.model.sample(z, steps=2))


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["student.residual_weights=[1,0]"], "three weights"),
        (["student.residual=semigroup"], "identity map"),
        (["student.residual=eulerian", "student.residual_weights=[1,0,1]"], "weight 0"),
        (["student.output=average_velocity", "student.skip=edm"], "no skip term"),
    ],
)
def test_residual_fields_that_disagree_are_refused(tiny_recipe, overrides, words):
    from odedistill.errors import UserError
    from odedistill.infra.recipes import load_config

    with pytest.raises(UserError, match=words):
        load_config(tiny_recipe, ["student.kind=flowmap", *overrides])


def test_the_adaptive_weight_learns_the_log_of_the_mean_loss_at_each_time():
    """min over w of E[e^{−w} ℓ + w] is w = log E[ℓ]: at three (s, t) pairs with losses of
    different sizes (noisy around 1e-4, 1 and 50) the trained w_φ meets log of their means."""
    weight = AdaptiveWeight()
    c_s = torch.tensor([1.0, 0.2, -1.3]).repeat(64)
    c_t = torch.tensor([-1.5, -1.5, -1.4]).repeat(64)
    gen = torch.Generator().manual_seed(0)
    losses = torch.tensor([1e-4, 1.0, 50.0]).repeat(64) * (0.5 + torch.rand(192, generator=gen))
    opt = torch.optim.Adam(weight.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        weight.weigh(losses, c_s, c_t).mean().backward()
        opt.step()
    means = losses.view(64, 3).mean(0)
    torch.testing.assert_close(weight(c_s[:3], c_t[:3]), means.log(), rtol=0, atol=2e-2)
