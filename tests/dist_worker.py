"""Worker of tests/test_distributed.py, started as ``torchrun --nproc_per_node 2 tests/dist_worker.py RECIPE OUT``.

Each rank runs, in one process group:
  straight/  the Trainer API for 12 iterations; every rank saves its final weights;
  cli/       run_recipe (what ``odedistill run`` calls) for 6 iterations, then resumed to 12;
  autodiff/  the autodiff scheme (a JVP inside DDP) for 6 iterations; every rank saves its weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from odedistill.api.run import run_recipe
from odedistill.infra import distributed
from odedistill.infra.build import build_session
from odedistill.infra.recipes import load_config
from odedistill.training.trainer import Trainer

COMMON = ["train.micro_batch=8", "train.checkpoint_every=1000", "eval.enabled=false"]


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().clone() for k, v in trainer.session.model.state_dict().items()}
    for rate, model in trainer.session.ema.models.items():
        out.update({f"ema{rate}.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    return out


def train(recipe: str, out: Path, overrides: list[str]) -> Trainer:
    cfg = load_config(recipe, COMMON + overrides)
    trainer = Trainer(build_session(cfg), out)
    trainer.run(show_progress=False)
    return trainer


def main(recipe: str, out: Path) -> None:
    env, _, _ = distributed.init_from_env(torch.device("cpu"))
    assert env.world_size == 2, env
    rank = env.rank

    trainer = train(recipe, out / "straight", ["train.iterations=12", "train.sample_every=6"])
    torch.save(weights(trainer), out / f"straight_rank{rank}.pt")

    overrides = list(COMMON)
    run_recipe(recipe, out / "cli", overrides + ["train.iterations=6"], show_progress=False)
    run_recipe(
        recipe,
        out / "cli",
        overrides + ["train.iterations=12"],
        resume=True,
        show_progress=False,
    )

    trainer = train(recipe, out / "autodiff", ["train.iterations=6", "scheme.kind=autodiff"])
    torch.save(weights(trainer), out / f"autodiff_rank{rank}.pt")
    distributed.barrier()
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
