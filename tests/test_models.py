"""Trajectory models and distances: exact boundary condition, distance formulas."""

import json
import math

import pytest
import torch

from odedistill import (
    MLP,
    FlowMap,
    FlowMatchingODE,
    GaussianMixtureVelocity,
    LinearODE,
    ProbabilityFlowODE,
    PseudoHuber,
    SmallUNet,
    SquaredL2,
    ring_mixture,
)
from odedistill.errors import UserError
from odedistill.models.parametrisation import DiscreteTimesteps, Parametrisation, RootScale


@pytest.mark.parametrize("kind", ["pf", "linear"])
def test_boundary_condition_is_exact(kind):
    torch.manual_seed(0)
    if kind == "pf":
        system = ProbabilityFlowODE(ring_mixture(), (2,))
    else:
        system = LinearODE()
    model = FlowMap.for_system(MLP((2,), 64, 2), system, two_times=False)
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
    model = FlowMap.for_system(MLP((2,), 32, 1), system, two_times=False)
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

    with pytest.raises(UserError, match=r"pip install -e '\.\[lpips\]'"):
        LPIPS()


def test_discrete_timesteps_map_is_exact_on_its_table_and_linear_in_log_sigma():
    sigmas = [0.01, 0.1, 2.0, 50.0]
    m = DiscreteTimesteps(sigmas)
    table = torch.tensor(sigmas, dtype=torch.float64)
    assert m(table).tolist() == [0.0, 1.0, 2.0, 3.0]
    mid = math.exp(math.log(0.1) + 0.25 * (math.log(2.0) - math.log(0.1)))
    out = m(torch.tensor([mid, 1e-4, 1e3], dtype=torch.float64))
    assert out[0].item() == pytest.approx(1.25, abs=1e-14)
    assert out[1:].tolist() == [0.0, 3.0]  # clamped outside the table
    assert m(torch.tensor([0.1], dtype=torch.float32)).dtype == torch.float64
    # forward-mode derivative (the autodiff scheme): dt/dsigma = 1/(sigma (ln s_k+1 - ln s_k))
    sigma = torch.tensor([mid], dtype=torch.float64)
    _, dt = torch.func.jvp(m, (sigma,), (torch.ones_like(sigma),))
    assert dt.item() == pytest.approx(1 / (mid * (math.log(2.0) - math.log(0.1))), rel=1e-12)
    # described by numbers only: JSON and back gives the same map
    param = Parametrisation(0.0, RootScale(1.0), m)
    back = Parametrisation.from_dict(json.loads(json.dumps(param.to_dict())))
    assert back == param and back.c_noise(table).tolist() == [0.0, 1.0, 2.0, 3.0]
    for bad in ([0.1], [0.1, 0.1], [0.2, 0.1], [0.0, 1.0], [0.1, float("nan")], ["a", 1.0]):
        with pytest.raises(UserError):
            Parametrisation.from_dict(
                {**param.to_dict(), "c_noise": {"kind": "timesteps", "sigmas": bad}}
            )


def test_flow_matching_student_is_anchored_at_zero():
    system = FlowMatchingODE(GaussianMixtureVelocity(ring_mixture()), (2,), t_max=1.0, t_min=0.1)
    model = FlowMap.for_system(MLP((2,), 32, 1), system, two_times=False)
    assert model.param == Parametrisation.plain(0.0)
    t = torch.tensor([1.0, 0.5, 0.1])
    torch.testing.assert_close(model.weight(t), t)  # x = t z + (1 - t) F
    torch.testing.assert_close(model.c_noise(t), t)
    assert model.c_in == 1.0


def test_state_fourier_features_are_the_formula():
    """student.x_fourier: the input layer sees [h, sin(B h), cos(B h)], |B_j| log-spaced from 1
    to x_fourier_max, the same B in every network; x_fourier = 0 is the plain MLP, bit for bit."""
    torch.manual_seed(1)
    net = MLP((2,), 16, 1, x_fourier=4, x_fourier_max=8.0)
    B = net.x_freqs.double()
    assert torch.allclose(B.norm(dim=1), torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=B.dtype))
    assert torch.equal(net.x_freqs, MLP((2,), 8, 3, x_fourier=4, x_fourier_max=8.0).x_freqs)
    seen = []
    net.inp.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x, t = torch.randn(5, 2), torch.rand(5)
    net(x, t)
    a = x @ net.x_freqs.T
    assert torch.allclose(seen[0], torch.cat([x, a.sin(), a.cos()], 1))
    assert net.inp.in_features == 2 + 2 * 4
    torch.manual_seed(2)
    plain = MLP((2,), 16, 2, two_times=True)
    torch.manual_seed(2)
    zero = MLP((2,), 16, 2, two_times=True, x_fourier=0)
    assert plain.state_dict().keys() == zero.state_dict().keys()
    assert torch.equal(plain(x, t, noise_labels_s=t), zero(x, t, noise_labels_s=t))


def test_a_state_fourier_student_reloads(tiny_recipe, tmp_path):
    from odedistill import build_session, load_config, load_student
    from odedistill.training.trainer import Trainer

    cfg = load_config(tiny_recipe, ["student.kind=flowmap", "student.x_fourier=6"])
    trainer = Trainer(build_session(cfg), tmp_path / "run")
    trainer.run(iterations=3, show_progress=False)
    back = load_student(tmp_path / "run", "raw")
    z, s, t = torch.randn(7, 2), torch.full((7,), 3.0), torch.full((7,), 0.5)
    with torch.no_grad():
        assert torch.equal(trainer.session.model.transport(z, s, t), back.transport(z, s, t))
    assert back.net.inp.in_features == 2 + 12
