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
