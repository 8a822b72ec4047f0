"""A teacher family is one file plus one registration: this file defines a toy family (the exact
denoiser of one Gaussian, with fields of its own), registers it, trains a student from a recipe
that names it, samples the student from its checkpoint and unregisters it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from odedistill.api.run import run_recipe
from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.infra.docs import recipes_markdown
from odedistill.infra.recipes import load_config
from odedistill.infra.students import load_student
from odedistill.kinds import TEACHERS, Teacher, TeacherFamily
from odedistill.systems.probability_flow import ProbabilityFlowODE

pytestmark = pytest.mark.usefixtures("one_thread")


class GaussianDenoiser(nn.Module):
    """D(x; σ) = μ + s²/(s² + σ²)·(x − μ): the exact denoiser of x0 ~ N(μ, s² I)."""

    def __init__(self, mean: list[float], std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64))
        self.std = std
        self.state_shape = (len(mean),)

    def forward(self, x, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1)
        shrink = self.std**2 / (self.std**2 + sigma**2)
        return (self.mean + shrink * (x.double() - self.mean)).to(x.dtype)

    def sample(self, n, generator=None, dtype=torch.float32):
        noise = torch.randn((n, *self.state_shape), generator=generator, dtype=torch.float64)
        return (self.mean.cpu() + self.std * noise).to(dtype)


@dataclass
class GaussianOptions:
    mean: list[float] = _f([1.0, -0.5], "the Gaussian's mean", item=dict(lo=-10, hi=10))
    std: float = _f(0.2, "its standard deviation", lo=0, lo_open=True, hi=10)


class GaussianFamily(TeacherFamily):
    """One Gaussian N(teacher.mean, teacher.std^2 I), denoised exactly."""

    config = GaussianOptions

    def check(self, options: GaussianOptions, cfg, source: str) -> None:
        if not options.mean:
            raise UserError(f"{source}: 'teacher.mean' needs at least one coordinate")

    def build(self, options: GaussianOptions, cfg, device: torch.device) -> Teacher:
        D = GaussianDenoiser(options.mean, options.std).to(device)
        return Teacher(D, D.state_shape, 0)


RECIPE = """
[run]
seed = 1
device = "cpu"

[teacher]
kind = "gaussian"
mean = [1.5, -1.0, 0.5]
std = 0.3

[student]
width = 16
depth = 1

[scheme]
N = 12

[train]
batch = 16
iterations = 12
log_every = 6
checkpoint_every = 12

[eval]
n_heldout = 32
nfe = [1]
trajectories = 0
"""


@pytest.fixture
def gaussian_family():
    TEACHERS.register("gaussian", GaussianFamily())  # the one line
    yield
    TEACHERS.unregister("gaussian")


def test_an_unregistered_family_is_refused(tmp_path):
    (tmp_path / "r.toml").write_text(RECIPE)
    with pytest.raises(UserError, match="'teacher.kind' must be one of"):
        load_config(tmp_path / "r.toml")


def test_a_registered_family_trains_from_a_recipe_and_samples_from_its_checkpoint(
    gaussian_family, tmp_path
):
    assert "### teacher.kind = 'gaussian'" in recipes_markdown()
    recipe = tmp_path / "gaussian.toml"
    recipe.write_text(RECIPE)
    cfg = load_config(recipe)
    assert cfg.teacher.options == GaussianOptions([1.5, -1.0, 0.5], 0.3)
    with pytest.raises(UserError, match="teacher.std"):
        load_config(recipe, ["teacher.std=-1.0"])
    with pytest.raises(UserError, match="at least one coordinate"):
        load_config(recipe, ["teacher.mean=[]"])

    report = run_recipe(recipe, out=tmp_path / "run", show_progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["teacher"]
    assert saved == {"kind": "gaussian", "mean": [1.5, -1.0, 0.5], "std": 0.3}
    assert report["samplers"]["student"]["nfe"] == 1

    student = load_student(tmp_path / "run")  # without the teacher: the checkpoint suffices
    system = ProbabilityFlowODE(None, (3,))
    z = system.sample_initial(64, torch.Generator().manual_seed(0))
    x = student.sample(z)
    assert x.shape == (64, 3) and torch.isfinite(x).all()
    # the family's own fields left the recipe reference again with the family
    TEACHERS.unregister("gaussian")
    assert "teacher.kind = 'gaussian'" not in recipes_markdown()
    TEACHERS.register("gaussian", GaussianFamily())
