"""The library's entry points: distil a system, run a recipe, score a run's checkpoints."""

from odedistill.api.distill import distill
from odedistill.api.fid_runs import evaluate_checkpoint, evaluate_run
from odedistill.api.run import run_recipe

__all__ = ["distill", "evaluate_checkpoint", "evaluate_run", "run_recipe"]
