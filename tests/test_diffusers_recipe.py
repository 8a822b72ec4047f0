"""Diffusers teachers from a recipe: a tiny UNet saved by save_pretrained distils, evaluates and
samples on the CPU; the student takes the teacher's input scale and fractional timestep, and is
rebuilt from its checkpoint with the teacher's folder deleted."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import odedistill
from odedistill.api.run import run_recipe
from odedistill.errors import UserError
from odedistill.infra.build import build_session
from odedistill.infra.checkpoint import latest_checkpoint, load_checkpoint
from odedistill.infra.recipes import from_dict, to_toml
from odedistill.infra.students import NETWORK_CLASSES, read_student, rebuild_network
from odedistill.models.parametrisation import DiscreteTimesteps, Parametrisation, RootScale
from odedistill.teachers import DiffusersDenoiser, DiffusersUNet
from tests.conftest import tiny_unet2d
from tests.test_hostile import cli

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

#: the linear DDPM schedule's sigma_0 = sqrt(1e-4 / (1 - 1e-4)) and sigma_999 (157.4)
SIGMA_0 = math.sqrt(1e-4 / (1 - 1e-4))


def save_teacher(folder: Path, prediction_type: str = "epsilon", dropout: float = 0.1) -> Path:
    """A randomly initialised 3x8x8 UNet2DModel and a linear DDPM schedule, as a pipeline folder."""
    unet = tiny_unet2d(0, dropout=dropout)
    scheduler = diffusers.DDPMScheduler(prediction_type=prediction_type)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def recipe(teacher: Path, **sections) -> dict:
    raw = {
        "run": {"name": "ddpm", "device": "cpu", "seed": 1},
        "system": {"kind": "probability_flow", "t_max": 80.0, "t_min": 0.01},
        "teacher": {"kind": "diffusers", "path": str(teacher)},
        "student": {"net": "teacher", "init": "teacher", "dropout": 0.0},
        "scheme": {"kind": "upwind", "N": 6},
        "loss": {"distance": "pseudo_huber"},
        "train": {"batch": 4, "iterations": 2, "ema_rates": [0.9], "checkpoint_every": 2},
        "eval": {"enabled": False},
    }
    for name, body in sections.items():
        raw[name] = {**raw.get(name, {}), **body}
    return raw


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("ddpm") / "pipeline")


def test_student_is_the_teachers_unet_fed_as_the_teacher_feeds_it(teacher_dir):
    session = build_session(from_dict(recipe(teacher_dir)))
    student, D = session.model, session.system.denoiser
    assert isinstance(D, DiffusersDenoiser) and isinstance(student.net, DiffusersUNet)
    T = session.system.t_start
    # c_in = 1/sqrt(1 + T^2) = sqrt(abar) at T; c_noise = the teacher's fractional timestep
    assert student.param == Parametrisation(0.0, RootScale(1.0), DiscreteTimesteps(D.sigmas))
    assert student.c_in == pytest.approx(1 / math.sqrt(1 + T**2), rel=1e-15)
    t = torch.tensor([80.0, 3.0, 0.5, 0.01], dtype=torch.float64)
    torch.testing.assert_close(student.c_noise(t), D.coefficients(t).c_noise, rtol=0, atol=0)
    assert student.c_noise(D.sigmas[[0, 17, 999]]).tolist() == [0.0, 17.0, 999.0]
    # the student's dropout is the recipe's (diffusers blocks hold nn.Dropout modules)
    rates = {m.p for m in student.net.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.0}
    assert 0.1 in {m.p for m in D.modules() if isinstance(m, torch.nn.Dropout)}  # the teacher's
    # at step 0 the student's F is the teacher's F at the same noise level
    u = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    student.net.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            student.net(u, student.c_noise(t[:2])), D.model(u, D.c_noise(t[:2])), rtol=0, atol=0
        )
    # the description a checkpoint stores rebuilds the same network from JSON alone
    spec = json.loads(json.dumps(session.student_spec))
    assert spec["network"]["class"] == "DiffusersUNet"
    assert spec["network"]["kwargs"]["dropout"] == 0.0
    assert spec["network"]["kwargs"]["config"]["block_out_channels"] == [8, 16]
    assert Parametrisation.from_dict(spec["parametrisation"]) == student.param
    rebuilt = rebuild_network(spec, "test")
    assert NETWORK_CLASSES["DiffusersUNet"] is DiffusersUNet
    assert rebuilt.state_dict().keys() == student.net.state_dict().keys()
    rebuilt.load_state_dict(student.net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            rebuilt.eval()(u, student.c_noise(t[:2])), student.net(u, student.c_noise(t[:2]))
        )


def test_random_init_is_a_fresh_unet_of_the_same_config(teacher_dir):
    session = build_session(from_dict(recipe(teacher_dir, student={"init": "random"})))
    net, D = session.model.net, session.system.denoiser
    assert net.config == {**D.model.config, "dropout": 0.0}
    theirs = D.model.state_dict()
    mine = net.state_dict()
    assert mine.keys() == theirs.keys()
    assert not all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert session.model.param == D.parametrisation()


def test_the_interval_must_lie_in_the_schedule(teacher_dir):
    with pytest.raises(UserError, match=r"noise range \[0\.0100005, 157\.4") as info:
        build_session(from_dict(recipe(teacher_dir, system={"t_min": 0.002})))
    assert "set system.t_min and system.t_max inside it" in str(info.value)
    with pytest.raises(UserError, match="noise range"):
        build_session(from_dict(recipe(teacher_dir, system={"t_max": 200.0})))
    with pytest.raises(UserError, match="'teacher.path' is required"):
        from_dict({"teacher": {"kind": "diffusers"}})
    with pytest.raises(UserError, match="needs a flow-matching velocity"):
        build_session(
            from_dict(recipe(teacher_dir, system={"kind": "flow_matching", "t_max": 1.0}))
        )


def test_a_diffusers_recipe_distils_evaluates_and_samples_without_its_teacher(
    tmp_path, monkeypatch
):
    teacher = save_teacher(tmp_path / "teacher", prediction_type="v_prediction")
    raw = recipe(
        teacher,
        eval={
            "enabled": True,
            "n_heldout": 3,
            "nfe": [1],
            "reference": "heun",
            "trajectories": 1,
            "grid_size": 2,
        },
    )
    (tmp_path / "ddpm.toml").write_text(to_toml(from_dict(raw)))
    report = run_recipe(tmp_path / "ddpm.toml", tmp_path / "run", show_progress=False)
    assert report is not None
    evaluated = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert evaluated["student_weights"] == "ema0.9" and evaluated["n_heldout"] == 3
    assert {"student", "student_raw", "teacher_euler_5", "euler_1"} <= set(evaluated["samplers"])
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert json.loads(state["student"])["network"]["class"] == "DiffusersUNet"

    before, after = tmp_path / "before.npz", tmp_path / "after.npz"
    code, err = cli("sample", tmp_path / "run", "--seeds", "0-3", "--out", before, "--quiet")
    assert code == 0, err
    shutil.rmtree(teacher)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched either
    code, err = cli("sample", tmp_path / "run", "--seeds", "0-3", "--out", after, "--quiet")
    assert code == 0, err
    with np.load(before) as a, np.load(after) as b:
        assert a["images"].shape == (4, 8, 8, 3)
        np.testing.assert_array_equal(a["images"], b["images"])
    loaded = read_student(tmp_path / "run", weights="raw")
    assert loaded.system.denoiser is None and loaded.system.t_end == 0.01
    z = torch.randn(2, 3, 8, 8) * 80
    assert odedistill.load_student(tmp_path / "run").sample(z).shape == (2, 3, 8, 8)


def test_autodiff_scheme_differentiates_the_copied_unet(teacher_dir):
    """Forward-mode AD through the UNet and its timestep map gives the derivative reverse mode
    gives: u . (dx/dt) from the scheme's JVP equals d(u . x)/dt from autograd, per sample."""
    session = build_session(from_dict(recipe(teacher_dir, scheme={"kind": "autodiff"})))
    model = session.model.double().eval()
    z = session.system.sample_initial(2, torch.Generator().manual_seed(0), dtype=torch.float64)
    t, y, v = session.scheme(model.path(z, None), session.grid, torch.tensor([2, 3]))
    u = torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t_req = t.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad((u * model(z, t_req)).sum(), t_req)
    # to float32 round-off: diffusers computes the time embedding in float32
    torch.testing.assert_close((u * v).flatten(1).sum(1), g, rtol=1e-5, atol=1e-8)
    assert g.abs().min() > 1e-3  # the time input matters
