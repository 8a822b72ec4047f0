"""Knowing when the student is good enough: its error on held-out states against Euler with N − 1 steps.

Every ``train.validate_every`` steps the reported weights (the first EMA by default) solve
``train.validate_n`` held-out initial value problems in one step. Their mean relative error
against the reference endpoints (closed form, scipy DOP853 at 1e-10, or Heun on the
collocation grid with ``eval.reference = 'heun'``) divided by that of explicit Euler through
the collocation grid (N − 1 steps) is ``val_ratio``: 1 means the student is as accurate as
the N − 1 steps PID's loss asks it to reproduce. With ``train.stop_at_ratio`` the run stops
after two consecutive checks at or below it (one check can be a lucky dip).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from odedistill.infra.build import Session, reported_weights, weights_of
from odedistill.solvers import euler, heun, solve_reference
from odedistill.systems.base import ODESystem

if TYPE_CHECKING:
    from odedistill.training.trainer import Trainer

#: the held-out states are drawn from eval.seed plus this (apart from eval.json's)
VALIDATION_SEED_OFFSET = 2002
#: consecutive checks at or below train.stop_at_ratio before a run stops
CONSECUTIVE = 2


def mean_relative_error(x: torch.Tensor, exact: torch.Tensor) -> float:
    """mean_b |x_b − x*_b| / |x*_b| over flattened states, in float64 (eval.json's metric)."""
    x, exact = x.double().flatten(1).cpu(), exact.double().flatten(1).cpu()
    return ((x - exact).norm(dim=1) / exact.norm(dim=1).clamp_min(1e-300)).mean().item()


@torch.no_grad()
def reference_endpoints(
    system: ODESystem,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    heun_grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """x(t_end): the closed form where there is one, else Heun through ``heun_grid`` if
    given, else scipy."""
    if system.has_exact_solution:
        t = torch.full((z.shape[0],), system.t_end, dtype=torch.float64)
        return system.exact_solution(z.double(), t, cond)
    if heun_grid is not None:
        return heun(system, z.double(), heun_grid, cond).double()
    return solve_reference(system, z, cond)


class Validation:
    """The held-out set of a run and the check; ``after_step`` makes it a trainer hook."""

    def __init__(self, session: Session) -> None:
        cfg = session.cfg
        self.session = session
        self.every = cfg.train.validate_every
        self.target = cfg.train.stop_at_ratio
        self.streak = 0
        system = session.system
        gen = torch.Generator().manual_seed(cfg.eval.seed + VALIDATION_SEED_OFFSET)
        self.z = system.sample_initial(cfg.train.validate_n, gen, dtype=torch.float64)
        c = system.sample_condition(cfg.train.validate_n, gen)
        self.cond = None if c is None else c.double()
        grid = session.grid.detach().double().cpu()
        heun_grid = grid if cfg.eval.reference == "heun" else None
        self.exact = reference_endpoints(system, self.z, self.cond, heun_grid)
        self.euler_error = mean_relative_error(euler(system, self.z, grid, self.cond), self.exact)

    @torch.no_grad()
    def check(self) -> dict[str, float]:
        """The reported student's error, Euler's, and their ratio."""
        s = self.session
        model = weights_of(s)[reported_weights(s)]
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        cond = None if self.cond is None else self.cond.float().to(device)
        x = model.sample(self.z.float().to(device), cond)
        model.train(was_training)
        error = mean_relative_error(x, self.exact)
        return {
            "val_error": error,
            "val_euler_error": self.euler_error,
            "val_ratio": error / max(self.euler_error, 1e-300),
        }

    def after_step(self, trainer: Trainer, loss: float) -> None:
        if not self.every or trainer.step % self.every:
            return
        record = self.check()
        trainer.log.write({"step": trainer.step, **record, "train_seconds": trainer.train_seconds})
        trainer.status["val"] = f"{record['val_ratio']:.3g}"
        if self.target > 0:
            ok = record["val_ratio"] <= self.target
            self.streak = self.streak + 1 if ok else 0
            if self.streak >= CONSECUTIVE:
                trainer.stop_reason = (
                    f"val_ratio <= {self.target:g} at {CONSECUTIVE} consecutive checks"
                )

    def after_checkpoint(self, trainer: Trainer, path: object) -> None:
        """Nothing: the check runs after steps only."""
