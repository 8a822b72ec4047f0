"""Adding a student kind is this one file plus one registration line: a polynomial-in-time student
x(z, t) = z + τ^p F(z, τ), τ = (t − t_start)/(t_end − t_start), with a field of its own
(``student.power``). Registered, it is a valid recipe choice with its field validated and
documented under its kind; it trains from a recipe, its checkpoint names it and rebuilds it, and
the rebuilt student samples what the trained one does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from odedistill._tensor import append_dims
from odedistill.api.run import run_recipe
from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.infra.docs import recipes_markdown
from odedistill.infra.recipes import load_config
from odedistill.infra.students import load_student
from odedistill.kinds import STUDENTS
from odedistill.kinds.base import Indices, ObjectiveParts, StudentKind
from odedistill.kinds.students.pid import PIDObjective, pid_indices
from odedistill.models.base import TrajectoryModel
from odedistill.models.parametrisation import Parametrisation

pytestmark = pytest.mark.usefixtures("one_thread")


class Polynomial(TrajectoryModel):
    """x(z, t) = z + τ(t)^p · F(z, τ(t), cond): x(z, t_start) = z exactly."""

    def __init__(self, net: nn.Module, t_start: float, t_end: float, param, power: int) -> None:
        super().__init__()
        self.net, self.param, self.power = net, param, int(power)
        self.t_start, self.t_end = float(t_start), float(t_end)

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        tau = (t - self.t_start) / (self.t_end - self.t_start)
        return z + append_dims(tau**self.power, z.ndim) * self.net(z, tau, class_labels=cond)


@dataclass
class PolynomialConfig:
    power: int = _f(1, "the power p of tau in x = z + tau^p F", lo=1, hi=8)


class PolynomialStudent(StudentKind):
    """x(z, t) = z + tau^p F(z, tau): a toy student of one time input"""

    config = PolynomialConfig

    def build(
        self, net, system, param: Parametrisation, options: PolynomialConfig, cfg
    ) -> Polynomial:
        return Polynomial(net, system.t_start, system.t_end, param, options.power)

    def spec(self, model: Polynomial) -> dict[str, Any]:
        return {"power": model.power}

    def rebuild(self, net, spec: dict[str, Any], param: Parametrisation) -> Polynomial:
        return Polynomial(net, spec["t_start"], spec["t_end"], param, spec["power"])

    def objective(self, parts: ObjectiveParts, options: PolynomialConfig) -> nn.Module:
        return PIDObjective(
            parts.model, parts.system, parts.scheme, parts.distance, parts.grid, parts.autocast
        )

    def indices(self, options: PolynomialConfig, continuous: bool) -> Indices:
        return pid_indices


@pytest.fixture
def polynomial():
    STUDENTS.register("polynomial", PolynomialStudent())  # the one line
    yield
    STUDENTS.unregister("polynomial")


def test_an_unregistered_student_kind_is_refused(tiny_recipe):
    with pytest.raises(UserError, match="'student.kind' must be one of 'pid', 'flowmap'"):
        load_config(tiny_recipe, ["student.kind=polynomial"])
    with pytest.raises(UserError, match="unknown key 'student.power'"):
        load_config(tiny_recipe, ["student.power=2"])


def test_a_registered_student_kind_trains_and_samples_from_its_checkpoint(
    polynomial, tiny_recipe, tmp_path
):
    doc = recipes_markdown()
    assert "### student.kind = 'polynomial'" in doc and "| `student.power` | an integer |" in doc
    with pytest.raises(UserError, match="'student.power' must be <= 8, got 9"):
        load_config(tiny_recipe, ["student.kind=polynomial", "student.power=9"])
    out = tmp_path / "run"
    overrides = ["student.kind=polynomial", "student.power=2", "train.iterations=10"]
    run_recipe(
        tiny_recipe, out=out, overrides=[*overrides, "eval.enabled=false"], show_progress=False
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["student"]["kind"] == "polynomial" and cfg["student"]["power"] == 2
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").open()]
    assert losses and all(torch.isfinite(torch.tensor(losses)))

    student = load_student(out)  # from the checkpoint alone
    assert isinstance(student, Polynomial) and student.power == 2
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    x = student.sample(z)
    t = torch.full((64,), student.t_start)
    assert torch.equal(student(z, t), z)  # the boundary, exactly
    tau = torch.ones(64)  # at t_end: z + F(z, 1)
    assert torch.equal(x, z + student.net(z, tau))
    assert not torch.equal(x, z)


def test_an_unregistered_kind_s_checkpoint_is_a_clear_error(tiny_recipe, tmp_path):
    STUDENTS.register("polynomial", PolynomialStudent())
    try:
        out = tmp_path / "run"
        overrides = ["student.kind=polynomial", "train.iterations=2", "eval.enabled=false"]
        run_recipe(tiny_recipe, out=out, overrides=overrides, show_progress=False)
    finally:
        STUDENTS.unregister("polynomial")
    with pytest.raises(UserError, match="unknown student kind 'polynomial'"):
        load_student(out)
