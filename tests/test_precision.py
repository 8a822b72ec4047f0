"""Mixed precision: bf16/fp16 autocast with fp32 master weights and residuals; the teacher in inference mode."""

from __future__ import annotations

import json

import pytest
import torch

from odedistill.infra.build import build_session
from odedistill.infra.checkpoint import latest_checkpoint, load_checkpoint
from odedistill.infra.precision import Precision, autocast_forward
from odedistill.infra.recipes import load_config
from odedistill.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_trains_with_fp32_master_weights(tiny_recipe, tmp_path, precision):
    cfg = load_config(
        tiny_recipe,
        [f"train.precision={precision}", "train.iterations=6", "train.log_every=3"],
    )
    session = build_session(cfg)
    before = _flat(session.model)
    trainer = Trainer(session, tmp_path)
    trainer.run(show_progress=False)
    records = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert not torch.equal(before, _flat(session.model))
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert all(v.dtype == torch.float32 for v in state["model"].values())
    assert all(v.dtype == torch.float32 for sd in state["ema"].values() for v in sd.values())
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["precision"] == precision and info["torch"] == torch.__version__
    if precision == "fp16":  # dynamic loss scaling, saved for resume
        assert "scaler" in state and "loss_scale" in records[-1]
        assert info["grad_scaler"] is True
    else:
        assert "scaler" not in state and info["grad_scaler"] is False


def test_teacher_runs_in_inference_mode_and_the_run_precision(tiny_recipe, tmp_path):
    cfg = load_config(tiny_recipe, ["train.precision=bf16"])
    session = build_session(cfg)
    D = session.system.denoiser
    seen = []
    original = D.forward

    def spy(x, sigma, class_labels=None):
        seen.append((torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu")))
        return original(x, sigma, class_labels)

    D.forward = spy
    trainer = Trainer(session, tmp_path)
    loss = trainer.train_step()
    assert seen == [(True, True)]
    assert torch.isfinite(loss)
    assert all(
        p.grad is not None and p.grad.dtype == torch.float32
        for p in trainer.opt.param_groups[0]["params"]
    )


def test_autocast_network_returns_fp32_and_keeps_weights():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4))
    keys = list(net.state_dict())
    autocast_forward(net, Precision("bf16", "cpu"))
    x = torch.randn(3, 4)
    y = net(x)
    assert y.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net[1](net[0](x)).float()
    torch.testing.assert_close(y, ref)
    assert list(net.state_dict()) == keys and net[0].weight.dtype == torch.float32
    assert autocast_forward(net, Precision("fp32", "cpu")) is net
    with pytest.raises(ValueError, match="unknown precision"):
        Precision("fp8", "cpu")
