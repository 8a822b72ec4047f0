"""The PID training loop: draw z and collocation indices, minimise the residual, keep EMAs and checkpoints.

One step: each process draws its share of the batch from its own noise stream, splits it
into micro-batches, accumulates the gradient of the PID loss (Tee et al. 2024, eq. 9;
``odedistill.pid_loss`` through ``PIDObjective``) over them, averages it over the processes
(DistributedDataParallel), then takes one optimiser step at the scheduled learning rate and
updates the EMAs. With one process and no micro-batching this is exactly the single-batch step.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import signal
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from odedistill.errors import Interrupted, TrainingDiverged, UserError
from odedistill.infra import distributed
from odedistill.infra.build import (
    Session,
    build_distance,
    build_optimizer,
    learning_rate,
    reported_weights,
    weights_of,
)
from odedistill.infra.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
)
from odedistill.infra.machine import peak_memory_gib
from odedistill.infra.noise import NoiseStreams, capture_rng, restore_rng
from odedistill.infra.precision import Precision, prepare_networks
from odedistill.infra.progress import progress_bar
from odedistill.loss import CausalWeights
from odedistill.training import monitor
from odedistill.training.log import MetricsLog, write_run_info
from odedistill.training.objective import make_objective
from odedistill.training.signals import stop_on_signals
from odedistill.training.validation import Validation

# The student's buffers (resampling filters, Fourier frequencies) are constants: DDP need not
# broadcast them before every forward. The keyword changed name in PyTorch 2.12.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


class Hook:
    """Something a run does beside training, at points the trainer calls (FID, benchmarks)."""

    def after_step(self, trainer: Trainer, loss: float) -> None:
        """After each optimiser step (every rank)."""

    def after_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """After each checkpoint is written (every rank; rank 0 wrote it)."""


class Trainer:
    """Runs PID on a ``Session`` and writes metrics and checkpoints into ``run_dir``.

    Under torchrun (a process group exists) the student is wrapped in DistributedDataParallel
    and only rank 0 writes files.
    """

    def __init__(self, session: Session, run_dir: Path, hooks: list[Hook] | None = None) -> None:
        self.session = session
        self.cfg = cfg = session.cfg
        self.run_dir = Path(run_dir)
        self.hooks = list(hooks or [])
        self.dist = distributed.current()
        tc = cfg.train
        self.precision = Precision(tc.precision, session.device.type)
        self.distance = build_distance(cfg).to(session.device)
        self.noise = self.noise_streams()
        self.share = tc.batch // self.dist.world_size  # samples this process draws per step
        self.micro = min(tc.micro_batch or self.share, self.share)
        if self.dist.enabled and self.dist.rank > 0:
            torch.manual_seed(cfg.run.seed + self.dist.rank)  # own dropout masks per rank
        prepare_networks(
            session.model.net,
            session.system.teacher,
            tc,
            self.precision,
            image=session.system.is_image,
            forward_ad=session.scheme.needs_forward_ad,
            cuda=session.device.type == "cuda",
        )
        self.objective, self.indices = make_objective(session, self.distance, self.precision)
        if self.dist.enabled:
            device = session.device
            self.objective = nn.parallel.DistributedDataParallel(
                self.objective,
                device_ids=[device.index] if device.type == "cuda" else None,
                **_NO_BUFFER_SYNC,
            )
        self.opt = build_optimizer(cfg, session.model.parameters())
        self.scaler = self.precision.make_scaler()
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.guard = monitor.LossGuard()  # a loss that is not sane stops the run
        self.log = MetricsLog(self.run_dir, enabled=False)  # the open metrics.jsonl during run()
        self.window = {"loss_sum": 0.0, "loss_n": 0}  # the losses since the last metrics line
        self.train_seconds = 0.0  # train.clock seconds spent in training steps
        self.clock = time.process_time if tc.clock == "process" else time.perf_counter
        self.status = {"val": "-"}  # the progress bar's validation field
        self.stop_reason: str | None = None  # set by a hook (or the time budget) to stop early
        self.validation = Validation(session) if tc.validate_every else None
        self.hooks += [self.validation] if self.validation is not None else []

    def causal_weights(self) -> CausalWeights | None:
        """The objective's causal weights (loss.causal_eps), if any."""
        objective = getattr(self.objective, "module", self.objective)
        return getattr(objective, "causal", None)

    def noise_streams(self) -> NoiseStreams:
        """This process's noise: stream ``rank`` of ``world_size``."""
        d = self.dist
        return NoiseStreams(self.cfg.run.seed, [d.rank], d.world_size, self.cfg.train.batch)

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
            "config": json.dumps(self.cfg.to_dict()),
            "student": json.dumps(s.student_spec),
            "log_window": dict(self.window),
            "train_seconds": self.train_seconds,
        }
        if self.validation is not None:
            state["val_streak"] = self.validation.streak
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
        if self.validation is not None:
            self.validation.streak = int(state.get("val_streak", 0))
        causal = self.causal_weights()
        if causal is not None and "causal" in state:
            causal.load_state_dict(state["causal"])
        window = state.get("log_window") or {}
        self.window = {
            "loss_sum": float(window.get("loss_sum", 0.0)),
            "loss_n": int(window.get("loss_n", 0)),
        }

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
                self.run_dir, self.step, state, keep=self.cfg.train.keep_checkpoints
            )
        else:
            self.last_checkpoint = checkpoint_path(self.run_dir, self.step)
        return self.last_checkpoint

    # ------------------------------------------------------------ one step
    def train_step(self) -> torch.Tensor:
        """Accumulate the gradient of one batch (all micro-batches, all ranks); return its mean loss."""
        s = self.session
        z, idx, cond = self.noise.draw(s.system, s.grid.shape[0], s.device, self.indices)
        if self.cfg.train.channels_last and z.ndim == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        self.opt.zero_grad(set_to_none=True)
        starts = list(range(0, self.share, self.micro))
        total: torch.Tensor | None = None
        for k, a in enumerate(starts):
            sl = slice(a, a + self.micro)
            sync = contextlib.nullcontext()
            if self.dist.enabled and k < len(starts) - 1:
                sync = self.objective.no_sync()
            with sync:
                part = [t[sl] for t in idx]
                losses = self.objective(z[sl], *part, None if cond is None else cond[sl])
                # the mean over this process's share, whatever the micro-batching
                loss = losses.mean() if len(starts) == 1 else losses.sum() / self.share
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None
        total = distributed.mean_over_ranks(total)
        if self.cfg.optim.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), self.cfg.optim.grad_clip)
        return total

    def optimizer_step(self) -> None:
        """One optimiser step at the scheduled learning rate (through the loss scaler for
        fp16), then the EMA updates."""
        lr = learning_rate(self.cfg, self.step, self.train_seconds)
        for group in self.opt.param_groups:
            group["lr"] = lr
        if self.scaler is None:
            self.opt.step()
        else:
            self.scaler.step(self.opt)
            self.scaler.update()
        self.session.ema.update(self.session.model)
        self.step += 1

    # ------------------------------------------------------------ monitoring
    def write_samples(self) -> Path | None:
        """samples/step-XXXXXXXX.png from the fixed seed ``eval.seed`` (rank 0)."""
        e, s = self.cfg.eval, self.session
        name = reported_weights(s)
        return monitor.write_sample_grid(
            weights_of(s)[name],
            s.system,
            self.run_dir / "samples" / f"step-{self.step:08d}.png",
            seed=e.seed,
            grid_size=e.grid_size,
            n_points=e.n_heldout,
            batch=max(self.micro, 1),
        )

    def write_run_info(self) -> Path:
        return write_run_info(self)

    def check_finite(self) -> None:
        """Raise ``TrainingDiverged`` unless every set of weights is finite and maps a fixed
        probe batch of initial states to finite samples."""
        s = self.session
        for name, model in weights_of(s).items():
            if not monitor.gives_finite_samples(model, s.system, self.cfg.eval.seed):
                raise self._diverged(
                    f"the {name} weights became non-finite (or give non-finite or exploded samples) at "
                    f"step {self.step}"
                )

    def _diverged(self, what: str, loss: bool = False) -> TrainingDiverged:
        return monitor.diverged(self, what, loss)

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
        tc, s = self.cfg.train, self.session
        main = self.dist.is_main
        total = iterations or tc.iterations
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fields = ["{task.fields[speed]} it/s {task.fields[throughput]} samples/s"]
        fields += ["loss {task.fields[loss]}", "mem {task.fields[mem]}"]
        fields += ["val {task.fields[val]}"] if tc.validate_every else []
        bar = progress_bar(show_progress and main, fields, console)
        if main:
            remove_stale_temps(self.run_dir)
            MetricsLog(self.run_dir).trim(self.step)  # lines from a run killed past this step
            self.write_run_info()
        t_last, step_last, t_start = time.perf_counter(), self.step, time.perf_counter()
        with bar, MetricsLog(self.run_dir, main) as log, stop_on_signals() as stop:
            self.log = log
            task = bar.add_task(
                "distilling",
                total=total,
                completed=self.step,
                **dict.fromkeys(("speed", "throughput", "loss", "mem", "val"), "-"),
            )
            while self.step < total:
                tick = self.clock()
                loss = self.train_step()
                value = float(loss)
                if (problem := self.guard.problem(value)) is not None:
                    raise self._diverged(f"{problem} at step {self.step + 1}", loss=True)
                self.optimizer_step()
                seconds = torch.tensor([self.clock() - tick], device=loss.device)
                self.train_seconds += float(distributed.mean_over_ranks(seconds))  # one schedule
                if tc.max_seconds and self.train_seconds >= tc.max_seconds:
                    self.stop_reason = f"train.max_seconds = {tc.max_seconds:g} reached"
                self.window["loss_sum"] += value
                self.window["loss_n"] += 1
                for hook in self.hooks:
                    hook.after_step(self, value)
                if main and (self.step % tc.log_every == 0 or self.step == total):
                    now = time.perf_counter()
                    rate = (self.step - step_last) / max(now - t_last, 1e-9)
                    mem, mem_kind = peak_memory_gib(s.device)
                    mean = self.window["loss_sum"] / max(self.window["loss_n"], 1)
                    record = {
                        "step": self.step,
                        "loss": mean,
                        "it_per_s": rate,
                        "samples_per_s": rate * tc.batch,
                        **({"images_per_s": rate * tc.batch} if s.system.is_image else {}),
                        "elapsed_s": now - t_start,
                        "train_seconds": self.train_seconds,
                        "eta_s": (total - self.step) / max(rate, 1e-9),
                        "lr": self.opt.param_groups[0]["lr"],
                        "peak_mem_gib": mem,
                        "peak_mem_kind": mem_kind,
                    }
                    if self.scaler is not None:
                        record["loss_scale"] = float(self.scaler.get_scale())
                    log.write(record)
                    bar.update(
                        task,
                        speed=f"{rate:.2f}",
                        throughput=f"{rate * tc.batch:.1f}",
                        loss=f"{mean:.4g}",
                        mem=f"{mem:.2f} GiB",
                    )
                    t_last, step_last = now, self.step
                if self.step % tc.log_every == 0 or self.step == total:
                    self.window = {"loss_sum": 0.0, "loss_n": 0}
                bar.update(task, completed=self.step, val=self.status["val"])
                if main and tc.sample_every and self.step % tc.sample_every == 0:
                    self.write_samples()
                halt = distributed.any_over_ranks(self.stop_reason is not None)
                saved = self.step % tc.checkpoint_every == 0 or self.step == total or halt
                if saved:
                    path = self.save()
                    for hook in self.hooks:
                        hook.after_checkpoint(self, path)
                if halt:
                    reason = self.stop_reason or "another rank"
                    log.write(
                        {"step": self.step, "stopped": reason, "train_seconds": self.train_seconds}
                    )
                    break
                if distributed.any_over_ranks(stop.signum is not None):
                    path = self.last_checkpoint if saved else self.save()
                    signum = stop.signum or signal.SIGTERM
                    raise Interrupted(
                        f"interrupted at step {self.step} by {signal.Signals(signum).name}; "
                        f"the checkpoint {path} holds it; resume with --resume",
                        signum,
                    )
        distributed.barrier()  # every rank returns once rank 0's files are written
