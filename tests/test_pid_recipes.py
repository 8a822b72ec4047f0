"""The official PID recipes: DESIGN.md's settings, a one-line error for a missing teacher, a few CPU steps with a stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from odedistill.api.run import run_recipe
from odedistill.errors import UserError
from odedistill.infra.checkpoint import latest_checkpoint, load_checkpoint
from odedistill.infra.recipes import load_config
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT / "recipes" / "pid_cifar10.toml"
IMAGENET = ROOT / "recipes" / "pid_imagenet64.toml"
#: a small random EDM teacher of the recipe's architecture, and a distance needing no weights
STAND_IN = [
    "teacher.kind=edm_random",
    "teacher.img_resolution=8",
    "teacher.model_channels=16",
    "teacher.channel_mult=[1,2]",
    "teacher.num_blocks=1",
    "loss.distance=pseudo_huber",
    "run.device=cpu",
    "train.batch=4",
    "train.iterations=3",
    "train.log_every=1",
    "train.sample_every=3",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "recipe,teacher,lr,batch,iterations,precision,micro,label_dim",
    [
        (CIFAR, "edm-cifar10-32x32-uncond-vp.pkl", 2e-4, 512, 800_000, "fp32", 0, 0),
        (IMAGENET, "edm-imagenet-64x64-cond-adm.pkl", 1e-4, 2048, 400_000, "fp16", 32, 1000),
    ],
)
def test_official_settings(recipe, teacher, lr, batch, iterations, precision, micro, label_dim):
    cfg = load_config(recipe)
    assert cfg.teacher.kind == "edm" and Path(cfg.teacher.options.path).name == teacher
    assert cfg.student.net == cfg.student.init == "teacher" and cfg.student.dropout == 0.0
    assert (cfg.scheme.kind, cfg.scheme.N, cfg.scheme.grid, cfg.scheme.rho) == (
        "upwind",
        250,
        "karras",
        7.0,
    )
    assert cfg.loss.distance == "lpips_avgpool"  # the paper's: piq, VGG-16 with average pooling
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("radam", lr, 0.0)
    t = cfg.train
    assert (t.batch, t.iterations, t.precision, t.micro_batch) == (
        batch,
        iterations,
        precision,
        micro,
    )
    assert t.ema_rates == [0.999, 0.9999, 0.99995]
    assert (cfg.system.options.t_max, cfg.system.options.t_min, cfg.system.options.sigma_data) == (
        80.0,
        0.002,
        0.5,
    )
    stand_in = load_config(recipe, ["teacher.kind=edm_random"])
    from odedistill.teachers.architectures import edm_architecture

    kw = edm_architecture(stand_in.teacher.options.arch)
    assert kw["label_dim"] == label_dim


@pytest.mark.parametrize("recipe", [CIFAR, IMAGENET])
def test_dry_run_prints_the_resolved_recipe(recipe, tmp_path, capsys):
    assert run_recipe(recipe, tmp_path / "run", dry_run=True) is None
    out = capsys.readouterr().out
    assert "[train]" in out and 'precision = "' in out and "N = 250" in out
    assert not (tmp_path / "run").exists()


def test_missing_teacher_is_one_line_naming_the_checkpoint(tmp_path):
    r = invoke("run", str(CIFAR), "--out", str(tmp_path / "run"), "--set", "run.device=cpu")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: teacher checkpoint not found")
    assert "edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(UserError, match="edm-imagenet-64x64-cond-adm.pkl"):
        run_recipe(IMAGENET, tmp_path / "run2", ["run.device=cpu"], show_progress=False)


@pytest.mark.parametrize("recipe,extra", [(CIFAR, []), (IMAGENET, ["train.micro_batch=2"])])
def test_recipe_trains_on_cpu_with_a_stand_in_teacher(recipe, extra, tmp_path):
    out = tmp_path / "run"
    assert run_recipe(recipe, out, STAND_IN + extra, show_progress=False) is None
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all(
        k in lines[-1] for k in ("it_per_s", "samples_per_s", "peak_mem_gib", "eta_s", "loss")
    )
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines)
    assert (out / "samples" / "step-00000003.png").is_file()
    state = load_checkpoint(latest_checkpoint(out))
    assert state["step"] == 3 and len(state["ema"]) == 3
    info = json.loads((out / "run_info.json").read_text())
    assert info["precision"] == load_config(recipe).train.precision
    assert info["world_size"] == 1
