"""A collocation grid, a distance and a system kind are each one definition plus one registration
line: then a valid recipe choice, documented, trained from a recipe and (a system) rebuilt from
the checkpoint (docs/concepts.md, "Extending"; students and teachers: test_toy_student.py,
test_toy_teacher.py)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from odedistill.api.run import run_recipe
from odedistill.distances import DISTANCES
from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.grids import GRIDS, make_grid
from odedistill.infra.docs import recipes_markdown
from odedistill.infra.recipes import load_config
from odedistill.infra.students import read_student
from odedistill.kinds import SYSTEMS, SystemKind
from odedistill.systems.base import ODESystem

pytestmark = pytest.mark.usefixtures("one_thread")


def cosine_grid(N: int, t_start: float, t_end: float, rho: float) -> torch.Tensor:
    """t_k = t_end + (t_start - t_end) (1 + cos(pi k / (N - 1))) / 2: dense at both ends."""
    k = torch.arange(N, dtype=torch.float64)
    return t_end + (t_start - t_end) * (1 + torch.cos(math.pi * k / (N - 1))) / 2


class L1(torch.nn.Module):
    """mean absolute difference per sample"""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().flatten(1).mean(1)


@pytest.fixture
def registered():
    GRIDS.register("cosine", cosine_grid, help="dense at both ends")  # the one line
    DISTANCES.register("l1", lambda huber_c: L1(), help="mean absolute difference")  # the one line
    yield
    GRIDS.unregister("cosine")
    DISTANCES.unregister("l1")


def test_unregistered_grid_and_distance_are_refused(tiny_recipe):
    with pytest.raises(UserError, match="'scheme.grid' must be one of"):
        load_config(tiny_recipe, ["scheme.grid=cosine"])
    with pytest.raises(UserError, match="'loss.distance' must be one of"):
        load_config(tiny_recipe, ["loss.distance=l1"])


def test_a_registered_grid_and_distance_train_from_a_recipe(registered, tiny_recipe, tmp_path):
    doc = recipes_markdown()
    assert "'cosine' (dense at both ends)" in doc and "'l1' (mean absolute difference)" in doc
    g = make_grid("cosine", 5, 80.0, 0.002)
    assert float(g[0]) == 80.0 and abs(float(g[-1]) - 0.002) < 1e-15
    assert torch.allclose(g[2], torch.tensor((80.0 + 0.002) / 2, dtype=torch.float64))
    out = tmp_path / "run"
    run_recipe(
        tiny_recipe,
        out=out,
        overrides=["scheme.grid=cosine", "loss.distance=l1"],
        show_progress=False,
    )
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["scheme"]["grid"], cfg["loss"]["distance"]) == ("cosine", "l1")
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").open()]
    assert losses and all(math.isfinite(x) for x in losses)
    # the checkpoint rebuilds the run's grid by its registered name
    loaded = read_student(out)
    N = cfg["scheme"]["N"]
    assert torch.equal(loaded.grid, cosine_grid(N, loaded.model.t_start, loaded.model.t_end, 7.0))


class Decay(ODESystem):
    """dx/dt = -rate x on [0, 1], z ~ N(0, I_2): x(t) = exp(-rate t) z."""

    def __init__(self, rate: float) -> None:
        self.rate, self.t_start, self.t_end, self.state_shape = rate, 0.0, 1.0, (2,)

    def f(self, x, t, cond=None):
        return -self.rate * x

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.randn((n, 2), generator=generator, dtype=dtype)


@dataclass
class DecayOptions:
    rate: float = _f(1.0, "the decay rate", lo=0, hi=100)


class DecayKind(SystemKind):
    """exponential decay at system.rate"""

    config = DecayOptions

    def build(self, options: DecayOptions, cfg, teacher) -> ODESystem:
        return Decay(options.rate)


@pytest.fixture
def decay_kind():
    SYSTEMS.register("decay", DecayKind())  # the one line
    yield
    SYSTEMS.unregister("decay")


def test_a_registered_system_kind_trains_and_is_rebuilt_from_its_checkpoint(
    decay_kind, tiny_recipe, tmp_path
):
    assert "system.kind = 'decay'" in recipes_markdown()
    with pytest.raises(UserError, match="system.rate"):
        load_config(tiny_recipe, ["system.kind=decay", "system.rate=-1.0"])
    out = tmp_path / "run"
    sets = ["system.kind=decay", "system.rate=2.0", "scheme.grid=uniform", "eval.nfe=[1]"]
    run_recipe(tiny_recipe, out=out, overrides=sets, show_progress=False)
    saved = json.loads((out / "config.json").read_text())["system"]
    assert saved == {"kind": "decay", "rate": 2.0}
    loaded = read_student(out)  # a registered kind is rebuilt from the file's numbers
    assert isinstance(loaded.system, Decay) and loaded.system.rate == 2.0
    x = loaded.model.sample(torch.ones(4, 2))
    assert x.shape == (4, 2) and torch.isfinite(x).all()
