"""The EDM-architecture student (with attention): fused = separate evaluations, activation checkpointing and channels-last change nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from odedistill.distances import PseudoHuber
from odedistill.errors import UserError
from odedistill.infra.build import build_session
from odedistill.infra.precision import Precision, checkpoint_blocks
from odedistill.infra.recipes import load_config
from odedistill.kinds.students.pid import PIDObjective
from odedistill.loss import pid_loss
from odedistill.schemes import make_scheme
from odedistill.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"ddpmpp": "pid_cifar10.toml", "adm": "pid_imagenet64.toml"}
#: a small stand-in teacher of the recipe's architecture (attention at 4x4)
STAND_IN = [
    "teacher.kind=edm_random",
    "teacher.img_resolution=8",
    "teacher.model_channels=16",
    "teacher.channel_mult=[1,2]",
    "teacher.num_blocks=1",
    "loss.distance=pseudo_huber",
    "run.device=cpu",
    "train.batch=6",
    "train.micro_batch=0",
    "train.precision=fp32",
    "scheme.N=20",
]


#: ADM has one attention head per 64 channels: a narrower stand-in would have none
WIDER = {"ddpmpp": (), "adm": ("teacher.model_channels=64", "teacher.channel_mult=[1,1]")}


pytestmark = pytest.mark.usefixtures("one_thread")


def session_of(arch: str, extra: tuple[str, ...] = ()):
    overrides = [*STAND_IN, *WIDER[arch], *extra]
    return build_session(load_config(ROOT / "recipes" / RECIPES[arch], overrides))


def loss_and_grads(model, session, scheme, z, idx, cond):
    model.zero_grad(set_to_none=True)
    objective = PIDObjective(
        model,
        session.system,
        scheme,
        PseudoHuber(),
        session.grid,
        Precision("fp32", "cpu").autocast,
    )
    loss = objective(z, idx, cond).mean()
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def batch(session, n=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    z = session.system.sample_initial(n, g, dtype=dtype)
    idx = torch.tensor([0, 3, 7, 12, 18, 19])[:n]
    cond = session.system.sample_condition(n, g)
    return z, idx, None if cond is None else cond.to(dtype)


@pytest.mark.parametrize("arch,kind", [("ddpmpp", "upwind"), ("adm", "central")])
def test_fused_equals_separate_through_the_edm_student(arch, kind):
    session = session_of(arch)
    model = session.model.double()
    attention = [m for m in model.modules() if getattr(m, "num_heads", 0)]
    assert attention, "the stand-in student has self-attention"
    z, idx, cond = batch(session)
    fused = loss_and_grads(model, session, make_scheme(kind, fused=True), z, idx, cond)
    separate = loss_and_grads(model, session, make_scheme(kind, fused=False), z, idx, cond)
    torch.testing.assert_close(fused[0], separate[0], rtol=1e-12, atol=1e-14)
    assert fused[1].keys() == separate[1].keys() and len(fused[1]) > 10
    for name in fused[1]:
        torch.testing.assert_close(fused[1][name], separate[1][name], rtol=1e-9, atol=1e-12)


def test_objective_equals_pid_loss():
    session = session_of("ddpmpp")
    z, idx, cond = batch(session, dtype=torch.float32)
    scheme = make_scheme("upwind")
    objective = PIDObjective(
        session.model,
        session.system,
        scheme,
        PseudoHuber(),
        session.grid,
        Precision("fp32", "cpu").autocast,
    )
    ours = objective(z, idx, cond)
    ref = pid_loss(session.model, session.system, scheme, PseudoHuber(), session.grid, z, idx, cond)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("arch", ["ddpmpp", "adm"])
def test_activation_checkpointing_gives_the_same_gradients(arch):
    session = session_of(arch)
    model = session.model.double()
    z, idx, cond = batch(session)
    scheme = make_scheme("upwind")
    plain = loss_and_grads(model, session, scheme, z, idx, cond)
    ckpt_model = copy.deepcopy(model)
    n = checkpoint_blocks(ckpt_model.net)
    assert n >= 8  # every encoder and decoder entry with weights
    ckpt = loss_and_grads(ckpt_model, session, scheme, z, idx, cond)
    torch.testing.assert_close(plain[0], ckpt[0], rtol=1e-12, atol=1e-14)
    for name in plain[1]:
        torch.testing.assert_close(plain[1][name], ckpt[1][name], rtol=1e-9, atol=1e-12)


def test_trainer_options_checkpointing_and_channels_last(tmp_path):
    steps = {}
    for name, extra in {
        "plain": (),
        "checkpointed": ("train.checkpoint_activations=true",),
        "channels_last": ("train.channels_last=true",),
    }.items():
        trainer = Trainer(session_of("ddpmpp", extra), tmp_path / name)
        loss = trainer.train_step()
        grads = torch.cat(
            [p.grad.flatten() for p in trainer.session.model.parameters() if p.grad is not None]
        )
        steps[name] = (loss, grads)
    for name in ("checkpointed", "channels_last"):
        torch.testing.assert_close(steps[name][0], steps["plain"][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(steps[name][1], steps["plain"][1], rtol=1e-4, atol=1e-6)
    with pytest.raises(UserError, match="checkpoint_activations does not work with"):
        Trainer(
            session_of("ddpmpp", ("train.checkpoint_activations=true", "scheme.kind=autodiff")),
            tmp_path / "autodiff",
        )
