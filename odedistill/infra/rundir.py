"""Run directories: where a recipe's run goes, and whether it may start or resume there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from odedistill.errors import UserError
from odedistill.infra.checkpoint import latest_checkpoint
from odedistill.infra.config import Config
from odedistill.infra.recipes import from_dict, load_config

#: fields a resumed run may change; everything else must match the saved config
RESUMABLE_CHANGES = (
    "train.iterations",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.sample_every",
    "train.micro_batch",
    "train.tf32",
    "train.channels_last",
    "train.compile",
    "train.checkpoint_activations",
    "run.device",
)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b.get(s, {}).get(k)]


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / cfg.run.name


def prepare_run(
    recipe: str | Path, overrides: list[str], out: str | Path | None, resume: bool
) -> tuple[Config, Path]:
    """Validate the recipe and decide the run directory, refusing to clobber a run."""
    cfg = load_config(recipe, overrides)
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    saved = run_dir / "config.json"
    if resume:
        if not saved.is_file() or latest_checkpoint(run_dir) is None:
            raise UserError(
                f"nothing to resume in {run_dir}: no saved run there; drop --resume "
                "or point --out at the run directory"
            )
        stored = json.loads(saved.read_text())
        changed = [
            k
            for k in _differences(cfg.to_dict(), stored)
            if k not in RESUMABLE_CHANGES and not k.startswith("eval.")
        ]
        if changed:
            raise UserError(
                f"the recipe differs from the saved run in {', '.join(changed)}; resume with the "
                f"recipe the run was started with (see {saved})"
            )
        from_dict(stored)  # the saved config must still be valid
    elif latest_checkpoint(run_dir) is not None:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or --out "
            "to start a new one"
        )
    return cfg, run_dir
