"""Checks across a recipe's fields: combinations that each field's own type and range allow but
that cannot run together (a one-line ``UserError`` naming both fields and the fix)."""

from __future__ import annotations

import re
from typing import Any

from odedistill.errors import UserError
from odedistill.infra.config import Config
from odedistill.kinds import STUDENTS, SYSTEMS, TEACHERS
from odedistill.schemes import SCHEMES


def show(value: Any) -> str:
    """``repr`` shortened to one line of at most 60 characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_consistency(cfg: Config, source: str) -> None:
    """The rules between fields of a validated recipe (each field alone is already in range)."""
    if not _RUN_NAME.match(cfg.run.name) or ".." in cfg.run.name:
        raise UserError(
            f"{source}: 'run.name' = {show(cfg.run.name)} must be letters, digits, '.', '_' "
            "and '-' (it names the folder runs/<name>); use --out for another place"
        )
    e = cfg.eval
    if e.fid_every:
        if not (e.fid_ref and e.fid_detector):
            raise UserError(
                f"{source}: 'eval.fid_every' needs 'eval.fid_ref' and 'eval.fid_detector' "
                "(see docs/evaluation.md)"
            )
        if e.fid_every % cfg.train.checkpoint_every:
            raise UserError(
                f"{source}: 'eval.fid_every' must be a multiple of 'train.checkpoint_every' "
                f"({cfg.train.checkpoint_every}), since FID is computed from a checkpoint"
            )
    for section, registry in (("system", SYSTEMS), ("teacher", TEACHERS)):
        chosen = getattr(cfg, section)
        registry.get(chosen.kind).check(chosen.options, cfg, source)
    student = STUDENTS.get(cfg.student.kind)
    student.check(cfg.student.options, cfg, source)
    if e.fid_end and not (e.fid_ref and e.fid_detector):
        raise UserError(
            f"{source}: 'eval.fid_end' needs 'eval.fid_ref' and 'eval.fid_detector' "
            "(see docs/evaluation.md)"
        )
    if cfg.train.tol > 0 and not cfg.train.validate_every:
        raise UserError(
            f"{source}: 'train.tol' needs validation checks: set 'train.validate_every'"
        )
    if cfg.train.validate_steps > 1 and "multi_step" not in student.capabilities:
        raise UserError(
            f"{source}: 'train.validate_steps' > 1 needs a student that samples in several "
            f"steps ({_having('multi_step')}), not student.kind = '{cfg.student.kind}'"
        )
    if cfg.train.stop_at_ratio > 0 and not cfg.train.validate_every:
        raise UserError(
            f"{source}: 'train.stop_at_ratio' needs validation checks: set 'train.validate_every'"
        )
    if cfg.scheme.times == "continuous" and not SCHEMES.get(cfg.scheme.kind).continuous_times:
        raise UserError(
            f"{source}: 'scheme.times' = 'continuous' needs a scheme without a grid stencil: "
            f"set scheme.kind = 'autodiff' (not '{cfg.scheme.kind}')"
        )
    if cfg.loss.causal_eps > 0 and "causal" not in student.capabilities:
        raise UserError(
            f"{source}: 'loss.causal_eps' is for a one-time student ({_having('causal')}), "
            f"not student.kind = '{cfg.student.kind}'"
        )
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise UserError(f"{source}: 'optim.betas' expects two numbers in [0, 1)")
    if not all(0 < r < 1 for r in cfg.train.ema_rates):
        raise UserError(f"{source}: 'train.ema_rates' expects numbers in (0, 1)")
    if cfg.eval.ema not in (-1.0, 0.0) and cfg.eval.ema not in cfg.train.ema_rates:
        raise UserError(
            f"{source}: 'eval.ema' = {cfg.eval.ema} is not one of 'train.ema_rates' "
            f"{cfg.train.ema_rates}; use -1 for the first rate or 0 for the raw weights"
        )
    if cfg.train.micro_batch > cfg.train.batch:
        raise UserError(
            f"{source}: 'train.micro_batch' = {cfg.train.micro_batch} exceeds 'train.batch' = "
            f"{cfg.train.batch}; use 0 for one pass"
        )
    teacher = TEACHERS.get(cfg.teacher.kind)
    if "needs_path" in teacher.capabilities and not cfg.teacher.options.path:
        raise UserError(
            f"{source}: 'teacher.path' is required when teacher.kind = '{cfg.teacher.kind}'"
        )


def _having(capability: str) -> str:
    """'student.kind = 'a' or 'b'': the student kinds with ``capability``."""
    names = [n for n in STUDENTS.names() if capability in STUDENTS.get(n).capabilities]
    return "student.kind = " + " or ".join(f"'{n}'" for n in names)
