"""A training run: its state (step, train seconds, why it stops), its checkpoints, and ``run``, the loop to an end.

The parts come from the config once (``training.assemble``), the step and the loop from
``training.loop``, everything beside the step from ``training.callbacks``. Under torchrun (a
process group exists) the objective is wrapped in DistributedDataParallel and only rank 0
writes files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from odedistill.errors import TrainingDiverged, UserError
from odedistill.infra import distributed
from odedistill.infra.build import Session, weights_of
from odedistill.infra.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from odedistill.infra.hard_states import HardStates
from odedistill.infra.noise import NoiseStreams, capture_rng, restore_rng
from odedistill.loss import CausalWeights
from odedistill.training import monitor
from odedistill.training.assemble import assemble
from odedistill.training.callbacks import Callback
from odedistill.training.log import MetricsLog
from odedistill.training.loop import accumulate_gradients, training_loop, update_weights

#: what a run does beside training, at points of the loop (FID, benchmarks): a ``Callback``
Hook = Callback


class Trainer:
    """Runs PID on a ``Session`` and writes metrics and checkpoints into ``run_dir``.

    ``hooks`` (``Callback``s) act after each step, after the time budget and before
    validation, logging, samples, checkpoints and signals, in the order given.
    """

    def __init__(
        self, session: Session, run_dir: Path, hooks: list[Callback] | None = None
    ) -> None:
        self.session = session
        self.cfg = session.cfg  # for hooks; the loop reads the assembled parts only
        self.run_dir = Path(run_dir)
        self.dist = distributed.current()
        self.noise = self.noise_streams()
        self.assembly = assemble(session, self.run_dir, self.noise, self.dist, list(hooks or []))
        self.inputs = self.assembly.inputs  # what the step needs
        self.callbacks = self.assembly.callbacks  # in the order they act
        self.validation = self.assembly.validation
        self.step = 0
        # train.clock seconds spent in training steps, from the work before them (a reference
        # solve for loss.solved: process seconds, whatever the clock)
        self.train_seconds = self.assembly.setup_seconds
        self.stop_reason: str | None = None  # set by a callback to stop after this step
        self.stopping = False  # whether any rank set one: the run stops after this step
        self.last_checkpoint: Path | None = None
        self.saved_at: int | None = None  # the step of the checkpoint this run wrote last
        self.guard = monitor.LossGuard()  # a loss that is not sane stops the run
        self.log = MetricsLog(self.run_dir, enabled=False)  # the open metrics.jsonl during run()
        self.status = {"val": "-"}  # the progress bar's validation field

    # the step's parts by their usual names
    @property
    def opt(self) -> torch.optim.Optimizer:
        return self.inputs.optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        return self.inputs.scaler

    @property
    def objective(self) -> torch.nn.Module:
        return self.inputs.objective

    @property
    def share(self) -> int:
        return self.inputs.share

    @property
    def micro(self) -> int:
        return self.inputs.micro

    def noise_streams(self) -> NoiseStreams:
        """This process's noise: stream ``rank`` of ``world_size``, with hard-state replay
        (``train.hard_states``) mixed in."""
        d, tc = self.dist, self.cfg.train
        hard = None
        if tc.hard_states > 0:
            pool = tc.hard_pool * (tc.batch // d.world_size)
            hard = HardStates(tc.hard_states, pool, self.cfg.run.seed + d.rank, tc.hard_weighted)
        return NoiseStreams(self.cfg.run.seed, [d.rank], d.world_size, tc.batch, hard)

    def causal_weights(self) -> CausalWeights | None:
        """The objective's causal weights (loss.causal_eps), if any."""
        objective = getattr(self.objective, "module", self.objective)
        return getattr(objective, "causal", None)

    # ------------------------------------------------------------ the step
    def train_step(self) -> torch.Tensor:
        """Accumulate the gradient of one batch (all micro-batches, all ranks); return its mean loss."""
        return accumulate_gradients(self.inputs)

    def optimizer_step(self) -> None:
        """One optimiser step at the scheduled learning rate, then the EMA updates."""
        update_weights(self.inputs, self.step, self.train_seconds)
        self.step += 1

    def run(
        self,
        iterations: int | None = None,
        show_progress: bool = True,
        console: Console | None = None,
    ) -> None:
        """Train up to ``iterations`` total steps (the config's by default).

        SIGINT or SIGTERM ends the current step, saves a checkpoint and raises ``Interrupted``;
        ``--resume`` then continues exactly from there.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.assembly.progress.show(show_progress and self.dist.is_main, console)
        training_loop(self, iterations or self.assembly.iterations)
        distributed.barrier()  # every rank returns once rank 0's files are written

    # ------------------------------------------------------------ state I/O
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's content; under torchrun every rank must call it (RNG states are gathered)."""
        s = self.session
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": s.model.state_dict(),
            "ema": s.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": capture_rng(self.noise, s.device),
            "config": self.assembly.config_json,
            "student": json.dumps(s.student_spec),
            "train_seconds": self.train_seconds,
        }
        for callback in self.callbacks:  # the log's loss window, validation's streak
            state.update(callback.state_dict())
        causal = self.causal_weights()
        if causal is not None:
            state["causal"] = causal.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.dist.enabled:
            state["world_size"] = self.dist.world_size
        return state

    def load_state_dict(self, state: dict[str, Any], where: str = "the checkpoint") -> None:
        """Continue from a checkpoint's weights, optimiser, RNG streams and step (the state comes
        from ``load_checkpoint``, which has checked all of it against its checksum)."""
        try:
            self.session.model.load_state_dict(state["model"])
            self.session.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["optimizer"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
            restore_rng(state["rng"], self.noise, self.session.device, self.step)
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{where} does not fit this run ({first})") from None
        self.train_seconds = float(state.get("train_seconds", 0.0))
        for callback in self.callbacks:
            callback.load_state_dict(state)
        causal = self.causal_weights()
        if causal is not None and "causal" in state:
            causal.load_state_dict(state["causal"])

    def resume(self) -> int:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise UserError(
                f"nothing to resume in {self.run_dir}: it has no checkpoint; run without --resume"
            )
        self.load_state_dict(load_checkpoint(path, map_location=self.session.device), str(path))
        self.last_checkpoint = path
        MetricsLog(self.run_dir, self.dist.is_main).trim(self.step)
        return self.step

    def save(self) -> Path:
        """Write a checkpoint (rank 0); under torchrun every rank must call it.

        Weights that are not finite, or that give non-finite samples, are never written:
        the run stops with ``TrainingDiverged`` and the previous checkpoint stays the last.
        """
        self.check_finite()
        state = self.state_dict()
        if self.dist.is_main:
            self.last_checkpoint = save_checkpoint(
                self.run_dir, self.step, state, keep=self.assembly.keep_checkpoints
            )
        else:
            self.last_checkpoint = checkpoint_path(self.run_dir, self.step)
        self.saved_at = self.step
        return self.last_checkpoint

    # ------------------------------------------------------------ divergence
    def check_finite(self) -> None:
        """Raise ``TrainingDiverged`` unless every set of weights is finite and maps a fixed
        probe batch of initial states to finite samples."""
        s = self.session
        for name, model in weights_of(s).items():
            if not monitor.gives_finite_samples(model, s.system, self.assembly.probe_seed):
                raise self.diverged(
                    f"the {name} weights became non-finite (or give non-finite or exploded samples) at "
                    f"step {self.step}"
                )

    def diverged(self, what: str, loss: bool = False) -> TrainingDiverged:
        """The error that stops a diverged run (``monitor.diverged``)."""
        return monitor.diverged(self, what, loss)
