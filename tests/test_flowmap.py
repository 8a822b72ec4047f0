"""Flow maps X(x_s, s, t): exact boundary, PID recovered at s = T, the generalised Theorem 1,
the schemes' orders on a flow map's path, K-step sampling, and training from a recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import odedistill
from odedistill import (
    MLP,
    ProbabilityFlowODE,
    SmallUNet,
    SquaredL2,
    karras_grid,
    make_scheme,
    residual_loss,
    ring_mixture,
    uniform_grid,
)
from odedistill.infra.build import build_session
from odedistill.infra.recipes import load_config
from odedistill.kinds.students.flowmap import flowmap_indices, sampler_jumps
from odedistill.models.flowmap import FlowMap, sample_times, subgrid
from odedistill.models.parametrisation import Parametrisation, SkipScaling
from odedistill.solvers import euler
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _pf(shape=(2,)):
    return ProbabilityFlowODE(ring_mixture(), shape)


@pytest.mark.parametrize("skip", [SkipScaling.edm(0.5), SkipScaling.linear(-1.0), None])
@pytest.mark.parametrize("shape", [(2,), (1, 8, 8)])
def test_the_boundary_holds_exactly_for_every_s(skip, shape):
    torch.manual_seed(0)
    net = (
        MLP(shape, 32, 2, two_times=True)
        if len(shape) == 1
        else SmallUNet(shape, channels=8, two_times=True)
    )
    model = FlowMap(net, 80.0, 0.002, Parametrisation.edm(0.5), skip)
    for p in model.parameters():  # trained-looking weights, not the zero-initialised branch
        p.data += 0.1 * torch.randn_like(p)
    x = torch.randn(16, *shape) * 10
    s = torch.exp(torch.linspace(math.log(0.002), math.log(80.0), 16))
    assert torch.equal(model.transport(x, s, s), x)


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8)])
def test_pid_is_recovered_at_s_equal_T_bit_for_bit(shape):
    system = _pf(shape)
    grid = karras_grid(250, 80.0, 0.002)

    def net(two_times):
        torch.manual_seed(3)
        if len(shape) == 1:
            return MLP(shape, 64, 3, two_times=two_times)
        return SmallUNet(shape, channels=8, two_times=two_times)

    pid = FlowMap.for_system(net(False), system, two_times=False)
    fm = FlowMap(net(True), 80.0, 0.002, system.default_parametrisation(), system.flow_map_skip())
    z = system.sample_initial(32, torch.Generator().manual_seed(1))
    t = grid[torch.randint(0, 250, (32,))].float()
    assert torch.equal(fm(z, t), pid(z, t))


def test_an_edm_student_copied_from_its_teacher_starts_as_pid(tmp_path):
    stand_in = [
        "teacher.kind=edm_random",
        "teacher.img_resolution=8",
        "teacher.model_channels=16",
        "teacher.channel_mult=[1,2]",
        "teacher.num_blocks=1",
        "run.device=cpu",
    ]
    recipe = ROOT / "recipes" / "pid_cifar10_flowmap.toml"
    pid = build_session(load_config(recipe, [*stand_in, "student.kind=pid"]))
    fm = build_session(load_config(recipe, stand_in))
    assert isinstance(fm.model, FlowMap) and fm.model.net.second_time is not None
    assert fm.student_spec["network"]["kwargs"]["two_times"] is True
    z = fm.system.sample_initial(3, torch.Generator().manual_seed(0))
    t = torch.tensor([80.0, 1.0, 0.002])
    with torch.no_grad():
        assert torch.equal(fm.model(z, t), pid.model(z, t))


class TabulatedFlowMap(odedistill.TrajectoryModel):
    """A flow map from one source time t_k whose values at the grid times t_i, i ≥ k, are the
    teacher's explicit Euler steps from x_s: the flow map of the generalised Theorem 1."""

    def __init__(self, system, grid, x_s, k):
        super().__init__()
        self.grid, self.k = grid, k
        self.states = euler(system, x_s, grid[k:], return_trajectory=True)  # (N - k, B, ...)
        self.t_start, self.t_end = float(grid[0]), float(grid[-1])

    def transport(self, x_s, s, t, cond=None):
        pos = torch.searchsorted(-self.grid, -t.double()) - self.k
        assert torch.equal(self.grid[pos + self.k].to(t.dtype), t)
        B = self.states.shape[1]
        return self.states[pos, torch.arange(B).repeat(len(t) // B)]

    def forward(self, z, t, cond=None):  # pragma: no cover - not used
        raise NotImplementedError


@pytest.mark.parametrize("k", [0, 17, 33])
def test_generalised_theorem_1(k):
    system = _pf()
    grid = karras_grid(40, system.t_start, system.t_end)
    z = system.sample_initial(32, torch.Generator().manual_seed(0), dtype=torch.float64)
    x_s = euler(system, z, grid[: k + 1])  # any source state on the grid
    model = TabulatedFlowMap(system, grid, x_s, k)
    path = FlowMap.path_from(model, x_s, torch.full((32,), float(grid[k]), dtype=torch.float64))
    scheme = make_scheme("upwind")
    for i in range(k, grid.shape[0] - 1):
        idx = torch.full((32,), i)
        loss = residual_loss(path, system, scheme, SquaredL2(), grid, idx)
        assert loss.max() < 1e-20, (k, i, loss.max())
    # and not otherwise: a nudged state breaks it at its own index
    model.states[5] += 1e-3
    idx = torch.full((32,), k + 5)
    assert residual_loss(path, system, scheme, SquaredL2(), grid, idx).min() > 1e-12


class ExactLinearFlowMap(odedistill.TrajectoryModel):
    """The exact flow map of dx/dt = A x: X(x_s, s, t) = expm(A (t - s)) x_s."""

    def __init__(self, A):
        super().__init__()
        self.A = A
        self.t_start, self.t_end = 1.0, 0.002

    def transport(self, x_s, s, t, cond=None):
        Phi = torch.linalg.matrix_exp((t - s)[:, None, None] * self.A)
        return torch.einsum("bij,bj->bi", Phi, x_s)

    def forward(self, z, t, cond=None):  # pragma: no cover - not used
        raise NotImplementedError


@pytest.mark.parametrize("scheme,order", [("upwind", 1), ("central", 2)])
def test_the_schemes_keep_their_order_on_a_flow_maps_path(scheme, order):
    A = torch.tensor([[-0.5, -2.0], [2.0, -0.5]], dtype=torch.float64)
    model = ExactLinearFlowMap(A)
    Ns, errors = [40, 80, 160, 320], []
    for N in Ns:
        grid = uniform_grid(N, 1.0, 0.002)
        k = N // 4
        x_s = torch.randn(N - k, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        s = torch.full((N - k,), float(grid[k]), dtype=torch.float64)
        idx = torch.arange(k, N)
        path = FlowMap.path_from(model, x_s, s)
        t, y, v = make_scheme(scheme)(path, grid, idx)
        errors.append((v - y @ A.T).abs().max().item())
    x = torch.log(torch.tensor(Ns, dtype=torch.float64))
    e = torch.log(torch.tensor(errors, dtype=torch.float64))
    p = -(((x - x.mean()) * (e - e.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()
    assert abs(p - order) < 0.15, p
    path = FlowMap.path_from(model, x_s, s)
    _, y, v = make_scheme("autodiff")(path, grid, idx)
    torch.testing.assert_close(v, y @ A.T, rtol=1e-12, atol=1e-12)


def test_k_step_sampling_is_composition():
    torch.manual_seed(0)
    system = _pf()
    model = FlowMap(
        MLP((2,), 32, 2, two_times=True),
        80.0,
        0.002,
        Parametrisation.edm(0.5),
        SkipScaling.edm(0.5),
    )
    for p in model.parameters():
        p.data += 0.1 * torch.randn_like(p)
    grid = karras_grid(250, 80.0, 0.002)
    z = system.sample_initial(16)
    for K in (1, 2, 4, 8):
        times = sample_times(grid, K)
        assert times[0] == 80.0 and times[-1] == 0.002 and len(times) == K + 1
        x = z
        for a, b in zip(times[:-1], times[1:], strict=True):
            x = model.transport(x, torch.full((16,), a), torch.full((16,), b))
        with torch.no_grad():
            assert torch.equal(model.sample(z, steps=K, times=times), x)
    assert subgrid(grid, 4) == [0, 62, 124, 187, 249]
    with pytest.raises(odedistill.UserError, match="one step only"):
        FlowMap.for_system(MLP((2,), 8, 1), system, two_times=False).sample(z, steps=2)


def test_sources_and_targets_are_drawn_where_the_samplers_jump():
    N = 250
    jumps = sampler_jumps(N, [2, 4, 8])
    assert jumps == {31: 62, 62: 124, 93: 124, 124: 249, 156: 187, 187: 249, 218: 249}
    k, i = flowmap_indices(0.25, [2, 4, 8], "sampler")(N, 256, torch.Generator().manual_seed(0))
    assert (k[:64] == 0).all() and set(k[64:].tolist()) <= set(jumps)
    assert all(
        kk <= ii <= jumps[kk] for kk, ii in zip(k[64:].tolist(), i[64:].tolist(), strict=True)
    )
    k, i = flowmap_indices(0.5, [2], "uniform")(N, 100, torch.Generator().manual_seed(1))
    assert (k[:50] == 0).all() and (k[50:] >= 1).all() and (i >= k).all() and (i < N).all()


@pytest.fixture(scope="module")
def flowmap_run(tmp_path_factory) -> Path:
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("fm")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY)
    out = root / "run"
    r = invoke("run", recipe, "--out", out, "--set", "student.kind=flowmap",
               "--set", "student.steps=[2,4]", "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def test_a_flow_map_trains_and_evaluates_from_a_recipe(flowmap_run):
    report = json.loads((flowmap_run / "eval.json").read_text())
    s = report["samplers"]
    assert {"student@1", "student@2", "student@4"} <= set(s)
    assert s["student@1"]["trajectory_rel_error"] == s["student"]["trajectory_rel_error"]
    assert [s[f"student@{K}"]["nfe"] for K in (1, 2, 4)] == [1, 2, 4]
    assert len(s["student@2"]["times"]) == 3
    fm = report["flow_map"]
    assert fm["jumps"] == 10 and all(
        math.isfinite(fm[k]) for k in ("rel_error", "rel_error_to_end")
    )


def test_sampling_a_flow_map_in_steps_and_a_pid_student_refuses(flowmap_run, tiny_run, tmp_path):
    import numpy as np

    r = invoke(
        "sample", str(flowmap_run), "--steps", "4", "--n", "8", "--out", str(tmp_path / "a.npz")
    )
    assert r.returncode == 0, r.stderr
    loaded = odedistill.infra.students.read_student(flowmap_run)
    z = torch.randn(8, 2) * 80
    times = loaded.sample_times(4)
    with torch.no_grad():
        direct = loaded.model.sample(z, steps=4, times=times)
    assert torch.isfinite(direct).all()
    with np.load(tmp_path / "a.npz") as f:
        assert f["samples"].shape == (8, 2) and np.isfinite(f["samples"]).all()
    r = invoke("sample", tiny_run, "--steps", "2", "--out", tmp_path / "b.npz")  # a PID student
    assert r.returncode == 2 and "one step only" in r.stderr
    assert not (tmp_path / "b.npz").exists()


def test_a_flow_map_resumes_bit_for_bit(tiny_recipe, tmp_path):
    from odedistill.training.trainer import Trainer

    cfg = load_config(tiny_recipe, ["student.kind=flowmap", "train.checkpoint_every=1000"])
    straight = Trainer(build_session(cfg), tmp_path / "a")
    straight.run(iterations=20, show_progress=False)
    first = Trainer(build_session(cfg), tmp_path / "b")
    first.run(iterations=10, show_progress=False)
    resumed = Trainer(build_session(cfg), tmp_path / "b")
    resumed.resume()
    resumed.run(iterations=20, show_progress=False)
    a, b = straight.session.model.state_dict(), resumed.session.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
