"""Property: any value of the right or a wrong type in any recipe field (huge finite numbers, and the
arguments of the built-in systems, included) gives exit 0 or 2 (or 1 for a run that diverges),
never a traceback, and never leaves a run directory on exit 2."""

from __future__ import annotations

import json
import math
import shutil
import typing

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from odedistill.infra.recipes import all_fields
from tests.test_hostile import cli

pytestmark = pytest.mark.usefixtures("one_thread")

INTS = [-1, 0, 1, 2, 3, 7, 2**31, 10**12, 2**63]
FLOATS = [math.nan, math.inf, -math.inf, -1.0, 0.0, 1e-3, 0.5, 0.9, 1.0, 2.0, 1e30,
          1e160, 1e300, -1e300, 1.7976931348623157e308]  # fmt: skip
STRINGS = ["", "x", "../../escaped", "upwind", "central", "uniform", "l2", "ring", "digits",
           "mlp", "unet", "teacher", "cpu", "cuda", "auto", "linear", "pendulum", "edm",
           "edm_random", "bf16", "cosine", "ema", "flow_matching", "diffusers", "lpips_avgpool",
           "heun", "a" * 5000, "nul\x00"]  # fmt: skip
#: fields fuzzed with wrong types only: a right value makes the run slow, not wrong
SLOW = {"train.compile"}

#: a tiny setting, and EDM stand-ins kept tiny if a fuzzed field picks one
BASE = [
    "train.iterations=2",
    "train.checkpoint_every=1",
    "eval.enabled=false",
    "eval.n_heldout=16",
    "teacher.img_resolution=8",
    "teacher.model_channels=8",
    "teacher.channel_mult=[1]",
    "teacher.num_blocks=1",
]


def _fields() -> list[tuple[str, typing.Any]]:
    """Every field once, a kinded section's kinds' own fields included."""
    return list(dict.fromkeys((f.key, f.type) for f in all_fields()))


FIELDS = _fields()


def toml(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return str(value)


def values_of(tp: typing.Any) -> st.SearchStrategy:
    if typing.get_origin(tp) is dict:
        return st.sampled_from([{}, {"a": 1}])
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        return st.lists(values_of(inner), max_size=3)
    return {
        bool: st.booleans(),
        int: st.sampled_from(INTS),
        float: st.sampled_from(FLOATS),
        str: st.sampled_from(STRINGS),
    }[tp]


ANY = st.one_of(
    st.booleans(),
    st.sampled_from(INTS),
    st.sampled_from(FLOATS),
    st.sampled_from(STRINGS),
    st.lists(st.sampled_from(INTS), max_size=2),
    st.just({"a": 1}),
)


#: the arguments of the built-in systems that take system.args
BUILTIN_ARGS = {
    "pendulum": ["gamma", "T", "spread"],
    "linear": ["A", "t_start", "t_end", "z_scale"],
}


@st.composite
def builtin_args(draw) -> list[str]:
    """A built-in system with some of its arguments (right or wrong names, any values)."""
    kind = draw(st.sampled_from(sorted(BUILTIN_ARGS)))
    names = draw(st.lists(st.sampled_from([*BUILTIN_ARGS[kind], "nope"]), max_size=2, unique=True))
    values = [draw(ANY | st.just([[1.0, 0.0], [0.0, 1.0]])) for _ in names]
    body = ", ".join(f"{n} = {toml(v) if not isinstance(v, dict) else '{a = 1}'}"
                     for n, v in zip(names, values, strict=True))  # fmt: skip
    return [f'system.kind="{kind}"', f"system.args={{{body}}}"]


@st.composite
def overrides(draw) -> list[str]:
    chosen = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
    out = draw(builtin_args()) if draw(st.integers(0, 3)) == 0 else []
    for key, tp in chosen:
        right = key not in SLOW and draw(st.booleans())
        value = draw(values_of(tp) if right else ANY)
        out.append(f"{key}={toml(value) if not isinstance(value, dict) else '{a = 1}'}")
    return out


@settings(  # the number of examples comes from the profile (tests/conftest.py)
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sets=overrides())
def test_any_field_value_exits_cleanly(tiny_recipe, tmp_path, sets):
    run = tmp_path / "run"
    shutil.rmtree(run, ignore_errors=True)
    threads = torch.get_num_threads()
    try:
        args = [a for s in BASE + sets for a in ("--set", s)]
        code, err = cli("run", tiny_recipe, "--out", run, "--no-progress", *args)
    finally:
        torch.set_num_threads(threads)
    event(f"exit {code}")
    assert "Traceback" not in err, (sets, err)
    assert code in (0, 1, 2), (sets, err)
    if code == 1:
        assert "training stopped" in err, (sets, err)  # a valid recipe that diverges
    if code == 2:
        assert not run.exists(), (sets, err)
        assert err.strip().splitlines()[-1].startswith("error: "), (sets, err)
