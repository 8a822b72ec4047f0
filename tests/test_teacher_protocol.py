"""The teacher protocol: ``system.teacher``, ``default_parametrisation()`` and ``flow_map_skip()``.

A run reaches its teacher through the system whatever the teacher is called (a flow-matching
ODE keeps a velocity, not a denoiser), and a flow map's skip term is the teacher's own
preconditioning c_skip, c_out (EDM, VP, VE, diffusers), not EDM's for every teacher.
"""

from __future__ import annotations

import pytest
import torch

from odedistill.infra.build import build_session
from odedistill.infra.recipes import from_dict
from odedistill.kinds.students.flowmap import stored_skip
from odedistill.models.flowmap import FlowMap
from odedistill.parametrisation import Parametrisation, SkipScaling
from odedistill.systems.flow_matching import FlowMatchingODE, VelocityFromDenoiser
from odedistill.systems.linear import LinearODE
from odedistill.systems.probability_flow import ProbabilityFlowODE
from odedistill.teachers.gaussian_mixture import ring_mixture
from odedistill.teachers.precond import EDMPrecond, VEPrecond, VPPrecond
from odedistill.training.trainer import Trainer
from tests.conftest import EDM_TEACHER_KWARGS

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMAS = torch.tensor([0.002, 0.03, 0.5, 1.0, 7.0, 80.0], dtype=torch.float64)


def _precond(cls):
    torch.manual_seed(0)
    kwargs = {k: v for k, v in EDM_TEACHER_KWARGS.items()}
    return cls(**kwargs).eval().requires_grad_(False)


def _image_cfg(**sections):
    base = {
        "run": {"device": "cpu", "seed": 0},
        "student": {"net": "unet", "channels": 8, "channel_mult": [1], "blocks": 1},
        "scheme": {"N": 8},
        "train": {"batch": 2, "iterations": 1},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return from_dict(base)


def test_compile_and_channels_last_reach_a_flow_matching_teacher(tmp_path):
    velocity = VelocityFromDenoiser(_precond(EDMPrecond))
    system = FlowMatchingODE(velocity, (3, 8, 8), t_max=0.99, t_min=0.01, label_dim=4)
    assert system.teacher is velocity
    cfg = _image_cfg(train={"compile": True, "channels_last": True})
    Trainer(build_session(cfg, system=system), tmp_path)
    assert velocity._compiled_call_impl is not None
    convs = [p for p in velocity.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous() for p in convs)  # converted, not contiguous by accident


def test_systems_name_their_teacher_parametrisation_and_skip():
    D = ring_mixture()
    pf = ProbabilityFlowODE(D, (2,), sigma_data=0.7)
    assert pf.teacher is D and pf.default_parametrisation() == Parametrisation.edm(0.7)
    assert pf.flow_map_skip() == SkipScaling.edm(0.7)  # an exact denoiser: EDM's with σ_d
    fm = FlowMatchingODE(None, (2,))
    assert fm.teacher is None and fm.default_parametrisation() == Parametrisation.plain(0.0)
    assert fm.flow_map_skip() is None
    lin = LinearODE()
    assert lin.teacher is None and lin.flow_map_skip() is None
    assert lin.default_parametrisation() == Parametrisation.plain(lin.t_end)


@pytest.mark.parametrize("cls", [EDMPrecond, VPPrecond, VEPrecond])
def test_the_skip_scaling_is_the_preconditioners_own(cls):
    D = _precond(cls)
    c_skip, c_out = D.skip_scaling().coefficients(SIGMAS)
    want = D.coefficients(SIGMAS)
    torch.testing.assert_close(c_skip, want.c_skip, rtol=1e-15, atol=0)
    torch.testing.assert_close(c_out, want.c_out, rtol=1e-15, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_skip_scaling_of_a_diffusers_teacher_is_its_own(prediction_type):
    pytest.importorskip("diffusers")
    from odedistill.teachers.diffusers import DiffusersDenoiser
    from tests.conftest import tiny_unet2d

    betas = torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)
    D = DiffusersDenoiser(tiny_unet2d(), torch.cumprod(1 - betas, 0), prediction_type)
    c_skip, c_out = D.skip_scaling().coefficients(SIGMAS)
    want = D.coefficients(SIGMAS)
    torch.testing.assert_close(c_skip, want.c_skip, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(c_out, want.c_out, rtol=1e-12, atol=1e-15)


def test_a_vp_teachers_flow_map_takes_the_vp_skip():
    D = _precond(VPPrecond)
    system = ProbabilityFlowODE(D, (3, 8, 8), label_dim=4)
    cfg = _image_cfg(student={"kind": "flowmap", "skip": "auto", "steps": [2]})
    model = build_session(cfg, system=system).model
    assert isinstance(model, FlowMap) and model.skip_scaling == SkipScaling.linear(-1.0)
    s = SIGMAS[:-1]  # below T = 80
    a, b = model.skip(s)
    (c_skip, c_out, _, _), (c_skip_T, c_out_T, _, _) = D.coefficients(s), D.coefficients(80.0)
    assert torch.equal(a, c_skip - c_skip_T) and torch.equal(b, c_out / c_out_T)
    a_edm, _ = SkipScaling.edm(0.5).shifted(s, 80.0)
    assert (a_edm > 0.01).any() and (a == 0).all()  # not EDM's, which it was given before


def test_skip_scalings_round_trip_and_older_files_read_as_edm():
    for skip in (SkipScaling.edm(0.3), SkipScaling.edm(1.0, -1.0), SkipScaling.linear(-1.0)):
        assert SkipScaling.from_dict(skip.to_dict()) == skip
    assert SkipScaling.from_dict(SkipScaling.data().to_dict()) == SkipScaling.data()
    assert stored_skip({"skip_sigma_data": 0.5}) == SkipScaling.edm(0.5)
    assert stored_skip({"skip": {"kind": "linear", "sign": -1.0}}) == SkipScaling.linear(-1.0)
    assert stored_skip({"skip": None}) is None and stored_skip({}) is None
    a, b = SkipScaling.linear(1.0).shifted(torch.tensor([80.0]), 80.0)
    assert a.item() == 0.0 and b.item() == 1.0
