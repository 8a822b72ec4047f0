"""Self-contained students and teacher-supplied parametrisations.

A checkpoint rebuilds its student without the recipe's teacher file; a student copied from a
VP-preconditioned teacher feeds the copied network what the teacher feeds it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import odedistill
from odedistill.api.run import run_recipe
from odedistill.infra.build import build_session
from odedistill.infra.recipes import from_dict, load_config, to_toml
from odedistill.infra.students import read_student
from odedistill.models.parametrisation import EDMNoise, VPNoise
from odedistill.teachers import EDMPrecond, VPPrecond, save_teacher
from tests.conftest import invoke

pytestmark = pytest.mark.usefixtures("one_thread")

SONG = dict(
    img_resolution=8,
    img_channels=3,
    label_dim=0,
    use_fp16=False,
    model_type="SongUNet",
    model_channels=16,
    channel_mult=[1, 2],
    num_blocks=1,
    attn_resolutions=[4],
    augment_dim=9,
    dropout=0.13,
)


def _recipe(teacher: Path, **train) -> dict:
    return {
        "run": {"name": "tiny", "device": "cpu", "seed": 5},
        "teacher": {"kind": "edm", "path": str(teacher)},
        "student": {"net": "teacher", "init": "teacher", "dropout": 0.0},
        "scheme": {"kind": "upwind", "N": 10},
        "loss": {"distance": "pseudo_huber"},
        "train": {"batch": 4, "iterations": 2, "ema_rates": [0.9], **train},
        "eval": {"enabled": False},
    }


def _write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(to_toml(from_dict(raw)))
    return path


def test_a_student_samples_with_its_teacher_file_deleted(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_teacher(EDMPrecond(**SONG), teacher, SONG)
    recipe = _write_recipe(tmp_path / "tiny.toml", _recipe(teacher))
    run_recipe(recipe, out=tmp_path / "run", show_progress=False)

    before = tmp_path / "before.npz"
    r = invoke("sample", str(tmp_path / "run"), "--seeds", "0-5", "--out", str(before))
    assert r.returncode == 0, r.stderr
    teacher.unlink()
    after = tmp_path / "after.npz"
    r = invoke("sample", str(tmp_path / "run"), "--seeds", "0-5", "--out", str(after))
    assert r.returncode == 0, r.stderr
    with np.load(before) as a, np.load(after) as b:
        assert a["images"].shape == (6, 8, 8, 3)
        np.testing.assert_array_equal(a["images"], b["images"])

    student = odedistill.load_student(tmp_path / "run", weights="raw")
    z = torch.randn(2, 3, 8, 8) * 80
    assert student.sample(z).shape == (2, 3, 8, 8)
    loaded = read_student(tmp_path / "run", weights="0.9")
    assert loaded.weights == "ema0.9" and loaded.step == 2
    assert loaded.system.denoiser is None and loaded.system.state_shape == (3, 8, 8)


def test_load_student_matches_the_trained_weights(tiny_recipe, tmp_path):
    from odedistill.training.trainer import Trainer

    cfg = load_config(tiny_recipe, ["train.iterations=20"])
    session = build_session(cfg)
    Trainer(session, tmp_path / "r").run(show_progress=False)
    z = session.system.sample_initial(16, torch.Generator().manual_seed(1))
    for weights, model in (("raw", session.model), ("ema", session.ema.models["0.9"])):
        loaded = odedistill.load_student(tmp_path / "r", weights=weights)
        with torch.no_grad():
            torch.testing.assert_close(loaded.sample(z), model.eval().sample(z), rtol=0, atol=0)


def test_a_vp_teacher_supplies_its_own_time_input(tmp_path):
    torch.manual_seed(1)
    teacher = tmp_path / "vp.safetensors"
    save_teacher(VPPrecond(**SONG), teacher, SONG)
    session = build_session(from_dict(_recipe(teacher)))
    student, D = session.model, session.system.denoiser
    assert isinstance(D, VPPrecond)
    T = session.system.t_start
    # the student's input scale and time input are the VP teacher's, not EDM's
    assert student.c_in == pytest.approx(1 / math.sqrt(T**2 + 1), rel=1e-15)
    t = torch.tensor([80.0, 3.0, 0.5, 0.002], dtype=torch.float64)
    coeffs = D.coefficients(t)
    torch.testing.assert_close(student.c_noise(t), coeffs.c_noise, rtol=0, atol=0)
    assert student.param.c_noise == VPNoise(19.9, 0.1, 1000)
    assert not torch.allclose(EDMNoise()(t), coeffs.c_noise)  # the old, wrong input differs
    # at step 0 the student's F is the teacher's F at the same noise level
    g = torch.Generator().manual_seed(2)
    u = torch.randn(4, 3, 8, 8, generator=g)
    student.net.eval()
    t32 = t.float()
    with torch.no_grad():
        F_student = student.net(u, student.c_noise(t32))
        F_teacher = D.model(u, D.coefficients(t32).c_noise)
    torch.testing.assert_close(F_student, F_teacher, rtol=0, atol=0)


def _pid_formula(net, param, t_start, z, t, cond):
    """PID's one-time student written out: w(t) z + (1 − w(t)) F(c_in(t_start) z, c_noise(t)),
    w(t) = (t − t_anchor)/(t_start − t_anchor) with Python-float constants."""
    c_in = param.c_in.at(t_start)
    assert isinstance(c_in, float)
    a = float(param.t_anchor)
    F = net(c_in * z, param.c_noise(t), class_labels=cond)
    w = (t - a) / (float(t_start) - a)
    w = w.reshape(-1, *[1] * (z.ndim - 1)).to(F.dtype)
    return w * z + (1 - w) * F


@pytest.mark.parametrize("system", ["probability_flow", "flow_matching", "linear", "vp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_pid_student_is_pids_formula_bit_for_bit(system, dtype):
    """The 'pid' kind's student (a FlowMap with one time input) computes exactly the arithmetic
    of PID's formula, so a PID run trains bit for bit as before flow maps shared its class."""
    from odedistill.kinds import STUDENTS
    from odedistill.models.nets import MLP, SmallUNet
    from odedistill.models.parametrisation import Parametrisation, RootScale

    torch.manual_seed(0)
    mixture = odedistill.ring_mixture()
    if system == "flow_matching":
        sys_ = odedistill.FlowMatchingODE(odedistill.GaussianMixtureVelocity(mixture), (2,))
    elif system == "linear":
        sys_ = odedistill.LinearODE()
    else:
        sys_ = odedistill.ProbabilityFlowODE(odedistill.digits_mixture(16), (1, 8, 8))
    image = sys_.is_image
    net = SmallUNet((1, 8, 8), channels=8, label_dim=3) if image else MLP((2,), 32, 2)
    param = sys_.default_parametrisation()
    if system == "vp":  # a teacher-supplied parametrisation: VP input scale and time input
        param = Parametrisation(0.0, RootScale(1.0), VPNoise(19.9, 0.1, 1000))
    for p in net.parameters():  # trained-looking weights, not the zero-initialised output
        p.data += 0.1 * torch.randn_like(p)
    model = STUDENTS.get("pid").build(net, sys_, param, None, None).to(dtype)
    g = torch.Generator().manual_seed(1)
    z = sys_.sample_initial(6, g).to(dtype)
    t = torch.linspace(sys_.t_start, sys_.t_end, 6, dtype=dtype)
    cond = torch.eye(3, dtype=dtype)[torch.tensor([0, 1, 2, 0, 1, 2])] if image else None
    with torch.no_grad():
        assert torch.equal(model(z, t, cond), _pid_formula(net, param, sys_.t_start, z, t, cond))
    assert not model.multi_step and "multi_step" not in STUDENTS.get("pid").capabilities


def test_a_checkpoint_names_its_student_kind_and_old_names_still_read(tiny_recipe):
    """The spec says 'pid' or 'flowmap'; a spec of an older checkpoint ('boundary') is 'pid'."""
    from odedistill.infra.students import rebuild_student

    for kind in ("pid", "flowmap"):
        session = build_session(load_config(tiny_recipe, [f"student.kind={kind}"]))
        spec = session.student_spec
        assert spec["trajectory"] == kind
        model = rebuild_student(spec)
        assert model.multi_step == (kind == "flowmap")
        model.load_state_dict(session.model.state_dict())
        z = session.system.sample_initial(4, torch.Generator().manual_seed(0))
        t = torch.full((4,), session.system.t_end)
        with torch.no_grad():
            assert torch.equal(model(z, t), session.model(z, t))
        if kind == "pid":
            old = rebuild_student({**spec, "trajectory": "boundary"})
            old.load_state_dict(session.model.state_dict())
            with torch.no_grad():
                assert torch.equal(old(z, t), session.model(z, t))
    with pytest.raises(odedistill.UserError, match="unknown student kind 'boundry'"):
        rebuild_student({**spec, "trajectory": "boundry"})
