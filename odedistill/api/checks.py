"""The library API's arguments checked before any work, with the recipe fields' own types and ranges.

Each keyword argument of ``distill()`` that sets a recipe field is checked as that field is
(one source of truth for choices and ranges); a bad one is a one-line ``UserError`` naming
the argument, never an error from deep inside.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from odedistill.errors import UserError
from odedistill.infra.recipes import check_field
from odedistill.kinds import STUDENTS
from odedistill.systems.base import ODESystem

#: distill()'s arguments and the recipe fields they set
DISTILL_FIELDS: dict[str, str] = {
    "scheme": "scheme.kind",
    "N": "scheme.N",
    "grid": "scheme.grid",
    "rho": "scheme.rho",
    "distance": "loss.distance",
    "iterations": "train.iterations",
    "batch": "train.batch",
    "lr": "optim.lr",
    "optimizer": "optim.name",
    "schedule": "optim.schedule",
    "warmup": "optim.warmup",
    "causal_eps": "loss.causal_eps",
    "solved": "loss.solved",
    "solved_weight": "loss.solved_weight",
    "residual_fraction": "loss.residual_fraction",
    "normalise": "student.normalise",
    "normalise_output": "student.normalise_output",
    "time_input": "student.time",
    "x_fourier": "student.x_fourier",
    "x_fourier_max": "student.x_fourier_max",
    "width": "student.width",
    "depth": "student.depth",
    "validate_every": "train.validate_every",
    "stop_at_ratio": "train.stop_at_ratio",
    "tol": "train.tol",
    "validate_n": "train.validate_n",
    "validate_grow": "train.validate_grow",
    "times": "scheme.times",
    "target_grad": "loss.target_grad",
    "max_seconds": "train.max_seconds",
    "clock": "train.clock",
    "hard_states": "train.hard_states",
    "hard_pool": "train.hard_pool",
    "hard_weighted": "train.hard_weighted",
    "seed": "run.seed",
    "device": "run.device",
}

#: arguments whose value asks distill() to choose, not a recipe value
AUTO: dict[str, object] = {
    "scheme": "auto",
    "grid": "auto",
    "times": "auto",
    "target_grad": "auto",
    "distance": "auto",
    "N": None,
    "validate_every": None,
    "x_fourier": None,
}


def check_distill_args(args: dict[str, Any], fn: str = "distill") -> None:
    """Check ``distill()``'s arguments (its ``locals()`` at entry); unknown names are skipped."""
    system = args.get("system")
    if not isinstance(system, ODESystem):
        raise UserError(
            f"{fn}(system=...) expects an odedistill.ODESystem instance, got "
            f"{type(system).__name__} {system!r:.40}; write your ODE as an ODESystem subclass "
            "(docs/custom_ode.md) and pass an instance of it"
        )
    net = args.get("net")
    if net is not None and not isinstance(net, nn.Module):
        raise UserError(
            f"{fn}(net=...) expects a torch.nn.Module or None, got {type(net).__name__}"
        )
    for name, key in DISTILL_FIELDS.items():
        if name not in args:
            continue
        value = args[name]
        if name in AUTO and value is AUTO[name] or (value == "auto" == AUTO.get(name)):
            continue
        try:
            check_field(key, value)
        except UserError as e:
            raise UserError(f"{fn}(): {str(e).replace(repr(key), repr(name), 1)}") from None
    if "student" in args and args["student"] not in (*STUDENTS.names(), "auto"):
        names = ", ".join(repr(n) for n in STUDENTS.names())
        raise UserError(f"{fn}(student={args['student']!r}): use {names} or 'auto'")
    steps = args.get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10_000:
        raise UserError(f"{fn}(): 'steps' must be an integer from 1 to 10000, got {steps!r}")
    rate = args.get("ema_rate")
    if "ema_rate" in args and not (
        isinstance(rate, int | float) and not isinstance(rate, bool) and 0 < rate < 1
    ):
        raise UserError(f"{fn}(): 'ema_rate' must be a number in (0, 1), got {rate!r}")
    run_dir = args.get("run_dir")
    if run_dir is not None and not isinstance(run_dir, str | os.PathLike):
        raise UserError(f"{fn}(): 'run_dir' must be a folder path, got {type(run_dir).__name__}")
    if not isinstance(args.get("progress", True), bool):
        raise UserError(f"{fn}(): 'progress' must be True or False")
