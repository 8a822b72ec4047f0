"""The training loop reads the config only at assembly: a run whose config is taken away after
``Trainer(...)`` trains, validates, logs, draws sample grids and checkpoints exactly as one that
keeps it."""

from __future__ import annotations

import json

import pytest
import torch

from odedistill.infra.build import build_session
from odedistill.infra.checkpoint import list_checkpoints
from odedistill.infra.recipes import load_config
from odedistill.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class NoConfig:
    """Stands where the config was: reading any setting fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the config was read after assembly ({name!r})")


def test_the_loop_reads_no_config(tiny_recipe, tmp_path):
    every = ["train.log_every=2", "train.checkpoint_every=2", "train.sample_every=3"]
    every += ["train.validate_every=2", "train.validate_n=16", "train.max_seconds=1e6"]
    cfg = load_config(tiny_recipe, ["train.iterations=6", "eval.enabled=false", *every])
    runs = {}
    for name in ("kept", "taken"):
        session = build_session(cfg)
        trainer = Trainer(session, tmp_path / name)
        if name == "taken":
            session.cfg = trainer.cfg = NoConfig()  # type: ignore[assignment]
        trainer.run(show_progress=False)
        runs[name] = trainer
    kept, taken = (tmp_path / "kept", tmp_path / "taken")
    lines = [[json.loads(x) for x in (d / "metrics.jsonl").open()] for d in (kept, taken)]
    drop = ("it_per_s", "samples_per_s", "elapsed_s", "train_seconds", "eta_s", "peak_mem_gib")
    same = [[{k: v for k, v in r.items() if k not in drop} for r in run] for run in lines]
    assert same[0] == same[1]
    assert [r["step"] for r in lines[1] if "val_error" in r] == [2, 4, 6]
    assert [s for s, _ in list_checkpoints(taken)] == [4, 6]  # keep_checkpoints = 2
    assert sorted(p.name for p in (taken / "samples").iterdir()) == [
        "step-00000003.png",
        "step-00000006.png",
    ]
    for a, b in zip(
        runs["kept"].session.model.parameters(),
        runs["taken"].session.model.parameters(),
        strict=True,
    ):
        assert torch.equal(a, b)
