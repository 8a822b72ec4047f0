"""Adding a residual scheme is one new file (tests/bdf2.py) plus one registration line: it is then
a valid recipe choice, documented, trained from a recipe and benchmarked like the others."""

from __future__ import annotations

import json

import pytest
import torch

from odedistill.api.run import run_recipe
from odedistill.errors import UserError
from odedistill.infra.docs import recipes_markdown
from odedistill.infra.recipes import load_config
from odedistill.schemes import SCHEMES, make_scheme
from tests.bdf2 import BDF2
from tests.test_schemes import fitted_order

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bdf2():
    SCHEMES.register("bdf2", BDF2, help="second-order backward difference")  # the one line
    yield
    SCHEMES.unregister("bdf2")


def test_unregistered_scheme_is_refused(tiny_recipe):
    with pytest.raises(UserError, match="'scheme.kind' must be one of 'upwind'"):
        load_config(tiny_recipe, ["scheme.kind=bdf2"])


def test_a_registered_scheme_trains_from_a_recipe(bdf2, tiny_recipe, tmp_path):
    assert "'bdf2' (second-order backward difference)" in recipes_markdown()
    assert isinstance(make_scheme("bdf2"), BDF2)
    report = run_recipe(
        tiny_recipe, out=tmp_path / "run", overrides=["scheme.kind=bdf2"], show_progress=False
    )
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["scheme"]["kind"] == "bdf2"
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert report["samplers"]["student"]["nfe"] == 1


def test_the_registered_scheme_is_second_order(bdf2):
    from odedistill import karras_grid

    p = fitted_order("bdf2", lambda N: karras_grid(N, 80.0, 0.002))
    assert abs(p - 2) < 0.15, p
