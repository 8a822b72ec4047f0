"""Hostile and careless ODEs and arguments: f is probed before any work, every reference solve is
bounded, the library's arguments and a student's inputs and outputs are checked, every
number of a recipe has a range."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odedistill
from odedistill import ODESystem
from odedistill.errors import TrainingDiverged, UserError
from odedistill.infra.checkpoint import checksums, latest_checkpoint, load_checkpoint
from odedistill.infra.config import SECTIONS
from odedistill.infra.recipes import from_dict
from odedistill.models.flowmap import check_times
from odedistill.systems.pendulum import DampedPendulum
from tests.conftest import examples
from tests.test_hostile import cli, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

#: the small distill() every test here uses
TINY = dict(iterations=3, batch=8, N=8, width=8, depth=1, progress=False)


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail (instead of hanging) when the body runs longer than ``seconds``."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Decay(ODESystem):
    """dx/dt = -x on [0, 1]; subclasses break f or the initial states."""

    def __init__(self) -> None:
        self.t_start, self.t_end, self.state_shape = 0.0, 1.0, (2,)

    def f(self, x, t, cond=None):
        return -x

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.randn(n, 2, generator=generator, dtype=dtype)


class NanF(Decay):
    def f(self, x, t, cond=None):
        return x * float("nan")


class IntF(Decay):
    def f(self, x, t, cond=None):
        return x.long()


class FlatF(Decay):
    def f(self, x, t, cond=None):
        return x[:, 0]


class RaisingF(Decay):
    def f(self, x, t, cond=None):
        raise KeyError("boom")


class NanEnd(Decay):
    def __init__(self) -> None:
        super().__init__()
        self.t_end = float("nan")


class InfStates(Decay):
    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.full((n, 2), math.inf, dtype=dtype)


class WideStates(Decay):
    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.randn(n, 3, generator=generator, dtype=dtype)


class Float64States(Decay):
    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.randn(n, 2, generator=generator, dtype=torch.float64)


class LateNan(Decay):
    """f is NaN only near the end of the interval: the probe at t_start and mid-way passes."""

    def f(self, x, t, cond=None):
        return torch.where(t[:, None] > 0.9, math.nan, -x)


@pytest.mark.parametrize(
    "system, words",
    [
        (NanF(), ["NanF.f returned nan at state x = [", "time t = 0"]),
        (IntF(), ["IntF.f returned torch.int64", "floating-point"]),
        (FlatF(), ["FlatF.f returned shape (4,)", "states of shape (4, 2)"]),
        (RaisingF(), ["RaisingF.f raised KeyError: 'boom'", "t = 0"]),
        (NanEnd(), ["NanEnd: need finite t_start != t_end"]),
        (InfStates(), ["InfStates.sample_initial returned inf"]),
        (WideStates(), ["WideStates.sample_initial(4) returned shape (4, 3); expected (4, 2)"]),
        (Float64States(), ["returned torch.float64 states", "honour its dtype argument"]),
    ],
)
def test_a_broken_ode_is_one_sentence_naming_f_before_any_work(system, words, tmp_path):
    with time_limit(30), pytest.raises(UserError) as info:
        odedistill.distill(system, run_dir=tmp_path / "r", **TINY)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not (tmp_path / "r").exists()


def test_an_ode_that_fails_during_training_is_named_not_the_learning_rate(tmp_path):
    with time_limit(60), pytest.raises(TrainingDiverged) as info:
        odedistill.distill(LateNan(), run_dir=tmp_path, validate_every=0, solved=0, **TINY)
    message = str(info.value)
    assert "the ODE failed" in message and "LateNan.f returned nan" in message, message
    assert "optim.lr" not in message
    # with solved states (the default) the reference solve meets it first, before training
    with time_limit(60), pytest.raises(UserError, match=r"LateNan.f returned nan .* t = 0.9"):
        odedistill.distill(LateNan(), run_dir=tmp_path / "s", validate_every=0, **TINY)


def test_every_reference_solve_is_bounded():
    with time_limit(30), pytest.raises(UserError, match=r"LateNan.f returned nan .* t = 0.9"):
        odedistill.solve_reference(LateNan(), torch.randn(3, 2))

    class Stiff(Decay):
        def f(self, x, t, cond=None):
            return -1e6 * (x - torch.cos(t)[:, None])

    with time_limit(30), pytest.raises(UserError, match="over 2000 evaluations of f"):
        odedistill.solve_reference(Stiff(), torch.randn(2, 2), max_evaluations=2000)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(system=None), ["distill(system=...)", "NoneType"]),
        (dict(system="pendulum"), ["distill(system=...)", "str 'pendulum'"]),
        (dict(system=Decay(), iterations=-1), ["'iterations' must be >= 1"]),
        (dict(system=Decay(), N=2.5), ["'N' expects an integer"]),
        (dict(system=Decay(), lr=math.inf), ["'lr' must be a finite number"]),
        (dict(system=Decay(), lr=1e300), ["'lr' must be <= 10"]),
        (dict(system=Decay(), scheme="nope"), ["'scheme' must be one of"]),
        (dict(system=Decay(), ema_rate=1.0), ["'ema_rate' must be a number in (0, 1)"]),
        (dict(system=Decay(), net="mlp"), ["distill(net=...)"]),
    ],
)
def test_the_library_api_names_the_bad_argument(kwargs, words):
    with pytest.raises(UserError) as info:
        odedistill.distill(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


ARG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-1, 0, 1, 2, 7, 2**40]),
    st.sampled_from([math.nan, math.inf, -1.0, 0.0, 1e-3, 0.5, 1e300]),
    st.sampled_from(["", "auto", "upwind", "central", "uniform", "l2", "cosine", "x"]),
    st.just([1, 2]),
)
ARGS = ["scheme", "N", "grid", "rho", "distance", "lr", "optimizer", "schedule", "warmup",
        "ema_rate", "causal_eps", "normalise", "time_input", "validate_every", "stop_at_ratio",
        "max_seconds", "clock", "seed", "device"]  # fmt: skip


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(chosen=st.dictionaries(st.sampled_from(ARGS), ARG_VALUES, min_size=1, max_size=2))
def test_any_library_argument_gives_a_student_or_a_one_line_error(chosen, tmp_path):
    kwargs = {**TINY, **chosen}
    try:
        with time_limit(60):
            student = odedistill.distill(Decay(), run_dir=tmp_path, **kwargs)
    except UserError as e:
        assert "\n" not in str(e) and str(e), chosen
    except TrainingDiverged as e:
        assert "training stopped" in str(e), chosen
    else:
        assert torch.isfinite(student.sample(torch.randn(4, 2))).all()


def test_student_sample_casts_or_names_its_inputs():
    student = odedistill.distill(Decay(), run_dir=None, **TINY)
    z = torch.randn(4, 2)
    expected = student.sample(z)
    assert torch.allclose(student.sample(z.double()), expected)
    assert torch.allclose(student.sample(z.tolist()), expected)
    # the trust check reads its inputs the same way (distill() attached the system)
    assert torch.allclose(student.residual(z.double()), student.residual(z))
    for bad, words in (
        (torch.randn(4, 3), "z must be a batch of states of shape (B, 2), got (4, 3)"),
        (torch.randn(2), "shape (B, 2), got (2,)"),
        ([["a", "b"]], "z must be a tensor of numbers"),
    ):
        with pytest.raises(UserError) as info:
            student.sample(bad)
        assert words in str(info.value)


def test_sampling_times_must_be_finite():
    with pytest.raises(UserError, match="finite"):
        check_times([80.0, math.nan, 0.002], 80.0, 0.002)


def test_sample_refuses_exploded_or_non_finite_outputs(tmp_path, tiny_recipe):
    run = tmp_path / "run"
    code, err = cli("run", tiny_recipe, "--out", run, "--set", "eval.enabled=false",
                    "--set", "train.iterations=10", "--set", "train.checkpoint_every=10",
                    "--no-progress")  # fmt: skip
    assert code == 0, err
    for scale in (1e9, math.nan):
        state = load_checkpoint(latest_checkpoint(run))
        last = [k for k in state["model"] if k.endswith("bias")][-1]
        state["model"][last] = torch.full_like(state["model"][last], scale)
        state["checksums"] = checksums(state)
        bad = tmp_path / "bad.pt"
        torch.save(state, bad)
        code, err = cli("sample", bad, "--weights", "raw", "--out", tmp_path / "s.npz")
        one_line_error(code, err)
        assert ("exploded" in err) if scale == 1e9 else ("not finite" in err), err
        assert not (tmp_path / "s.npz").exists()


def _number_fields() -> list[tuple[str, type]]:
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                out.append((f"{section}.{f.name}", hints[f.name]))
    return out


@pytest.mark.parametrize("key, tp", _number_fields())
def test_every_number_field_has_a_bound(key, tp):
    section, name = key.split(".")
    for huge in (1e300, -1e300) if tp is float else (2**62, -(2**62)):
        with pytest.raises(UserError, match=f"'{key}' must be"):
            from_dict({section: {name: huge}})


@pytest.mark.parametrize(
    "args, words",
    [
        ({"T": "x"}, "system.args.T must be a number"),
        ({"T": 1e300}, "system.args.T = 1e+300 is outside"),
        ({"gamma": [1, "y"]}, "system.args.gamma must be a number"),
        ({"gamma": True}, "system.args.gamma must be a number"),
    ],
)
def test_built_in_system_arguments_are_typed_and_bounded(tiny_recipe, tmp_path, args, words):
    body = ", ".join(
        f"{k} = {v!r}".replace("'", '"').replace("True", "true") for k, v in args.items()
    )
    code, err = cli("run", tiny_recipe, "--out", tmp_path / "r", "--set", 'system.kind="pendulum"',
                    "--set", f"system.args={{{body}}}")  # fmt: skip
    one_line_error(code, err)
    assert words in err and not (tmp_path / "r").exists()


def test_sizes_are_bounded_before_any_work(tiny_recipe, tmp_path):
    code, err = cli("run", tiny_recipe, "--out", tmp_path / "r", "--set", 'teacher.preset="grid"',
                    "--set", "teacher.modes=1000")  # fmt: skip
    one_line_error(code, err)
    assert "at most 64 per side" in err and not (tmp_path / "r").exists()
    code, err = cli("run", tiny_recipe, "--out", tmp_path / "r", "--set", 'student.kind="flowmap"',
                    "--set", "student.steps=[]", "--set", "loss.causal_eps=0")  # fmt: skip
    one_line_error(code, err)
    assert "student.steps" in err
    code, err = cli("sample", tmp_path, "--n", "99999999999999", "--out", tmp_path / "s.npz")
    one_line_error(code, err)
    assert "--n must be from 1 to" in err


def test_pendulum_is_a_valid_system_for_the_properties():
    assert odedistill.distill(DampedPendulum(), **TINY).sample(torch.zeros(2, 2)).shape == (2, 2)
