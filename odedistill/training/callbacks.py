"""What a run does beside the step, as callbacks of the training loop: the time budget, metrics.jsonl, the progress bar, sample grids, checkpoints and signals.

Each callback is built once from the config by the composition root (``training.assemble``)
and sees the run's ``Trainer`` (step, train_seconds, stop_reason, stopping) at three points
of ``training_loop``: ``running`` (a context around the whole loop), ``after_step`` (each
step; any callback may set ``trainer.stop_reason``) and ``end_of_step`` (once every rank
knows whether the run stops after this step: ``trainer.stopping``).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from odedistill.errors import Interrupted
from odedistill.infra import distributed
from odedistill.infra.checkpoint import remove_stale_temps
from odedistill.infra.machine import peak_memory_gib
from odedistill.infra.progress import progress_bar
from odedistill.training import monitor
from odedistill.training.log import MetricsLog, write_run_info
from odedistill.training.signals import stop_on_signals

if TYPE_CHECKING:
    from odedistill.models.base import TrajectoryModel
    from odedistill.systems.base import ODESystem

#: the run (``odedistill.training.trainer.Trainer``, which imports this module: named here
#: without importing it)
Trainer = Any


class Callback:
    """Something a run does beside training (logging, checkpoints, FID, benchmarks)."""

    def running(self, trainer: Trainer, total: int) -> AbstractContextManager[Any]:
        """A context around the loop to step ``total`` (files, handlers, displays)."""
        return contextlib.nullcontext()

    def after_step(self, trainer: Trainer, loss: float) -> None:
        """After each optimiser step (every rank); may set ``trainer.stop_reason``."""

    def end_of_step(self, trainer: Trainer) -> None:
        """Once every rank knows whether the run stops after this step (``trainer.stopping``)."""

    def after_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """After each checkpoint is written (every rank; rank 0 wrote it)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this callback (its entries in the checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's entries (absent ones keep their start values)."""


class TimeBudget(Callback):
    """``train.max_seconds``: stop once the training steps have taken ``seconds`` (train.clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def after_step(self, trainer: Trainer, loss: float) -> None:
        if trainer.train_seconds >= self.seconds:
            trainer.stop_reason = f"train.max_seconds = {self.seconds:g} reached"


class MetricsLogging(Callback):
    """metrics.jsonl: every ``every`` steps (and the last) the mean loss since the last line,
    speed, ETA, learning rate and peak memory (rank 0); run_info.json at the start; the stop."""

    def __init__(self, run_dir: Path, every: int, batch: int, images: bool, info: dict) -> None:
        self.run_dir, self.every, self.batch = run_dir, every, batch
        self.images = images  # whether the states are images (images_per_s)
        self.info = info  # run_info.json's fields from the config (``write_run_info``)
        self.window = {"loss_sum": 0.0, "loss_n": 0}  # the losses since the last line
        self.record: dict[str, Any] = {}  # the latest line

    @contextlib.contextmanager
    def running(self, trainer: Trainer, total: int) -> Iterator[None]:
        self.total, main = total, trainer.dist.is_main
        if main:
            MetricsLog(self.run_dir).trim(trainer.step)  # lines from a run killed past this step
            write_run_info(self.run_dir, trainer.session.device, self.info, trainer.step)
        self.t_last, self.step_last = time.perf_counter(), trainer.step
        self.t_start = self.t_last
        with MetricsLog(self.run_dir, main) as log:
            trainer.log = log
            yield
            if trainer.stopping:
                reason = trainer.stop_reason or "another rank"
                record = {"step": trainer.step, "stopped": reason}
                log.write({**record, "train_seconds": trainer.train_seconds})

    def after_step(self, trainer: Trainer, loss: float) -> None:
        self.window["loss_sum"] += loss
        self.window["loss_n"] += 1
        if trainer.step % self.every and trainer.step != self.total:
            return
        if trainer.dist.is_main:
            now = time.perf_counter()
            rate = (trainer.step - self.step_last) / max(now - self.t_last, 1e-9)
            mem, mem_kind = peak_memory_gib(trainer.session.device)
            self.record = {
                "step": trainer.step,
                "loss": self.window["loss_sum"] / max(self.window["loss_n"], 1),
                "it_per_s": rate,
                "samples_per_s": rate * self.batch,
                **({"images_per_s": rate * self.batch} if self.images else {}),
                "elapsed_s": now - self.t_start,
                "train_seconds": trainer.train_seconds,
                "eta_s": (self.total - trainer.step) / max(rate, 1e-9),
                "lr": trainer.opt.param_groups[0]["lr"],
                "peak_mem_gib": mem,
                "peak_mem_kind": mem_kind,
            }
            if trainer.scaler is not None:
                self.record["loss_scale"] = float(trainer.scaler.get_scale())
            trainer.log.write(self.record)
            self.t_last, self.step_last = now, trainer.step
        self.window = {"loss_sum": 0.0, "loss_n": 0}

    def state_dict(self) -> dict[str, Any]:
        return {"log_window": dict(self.window)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        window = state.get("log_window") or {}
        self.window = {
            "loss_sum": float(window.get("loss_sum", 0.0)),
            "loss_n": int(window.get("loss_n", 0)),
        }


class ProgressDisplay(Callback):
    """The progress bar (rank 0): steps, and at each metrics line its speed, loss and memory."""

    def __init__(self, metrics: MetricsLogging, validation: bool) -> None:
        self.metrics, self.validation = metrics, validation
        self.enabled, self.console = False, None  # set by Trainer.run

    def show(self, enabled: bool, console: Console | None) -> None:
        """Show the bar (or not) on ``console`` (stderr by default) in the next run."""
        self.enabled, self.console = enabled, console

    @contextlib.contextmanager
    def running(self, trainer: Trainer, total: int) -> Iterator[None]:
        fields = ["{task.fields[speed]} it/s {task.fields[throughput]} samples/s"]
        fields += ["loss {task.fields[loss]}", "mem {task.fields[mem]}"]
        fields += ["val {task.fields[val]}"] if self.validation else []
        self.bar = progress_bar(self.enabled, fields, self.console)
        with self.bar:
            self.task = self.bar.add_task(
                "distilling",
                total=total,
                completed=trainer.step,
                **dict.fromkeys(("speed", "throughput", "loss", "mem", "val"), "-"),
            )
            yield

    def after_step(self, trainer: Trainer, loss: float) -> None:
        r = self.metrics.record
        if r.get("step") == trainer.step:
            self.bar.update(
                self.task,
                speed=f"{r['it_per_s']:.2f}",
                throughput=f"{r['samples_per_s']:.1f}",
                loss=f"{r['loss']:.4g}",
                mem=f"{r['peak_mem_gib']:.2f} GiB",
            )
        self.bar.update(self.task, completed=trainer.step, val=trainer.status["val"])


class SampleGrids(Callback):
    """``train.sample_every``: samples/step-XXXXXXXX.png of the reported weights from the fixed
    seed ``eval.seed`` (rank 0): an image grid or a 2-D scatter."""

    def __init__(
        self,
        run_dir: Path,
        every: int,
        model: TrajectoryModel,
        system: ODESystem,
        seed: int,
        grid_size: int,
        n_points: int,
        batch: int,
    ) -> None:
        self.run_dir, self.every, self.model, self.system = run_dir, every, model, system
        self.seed, self.grid_size, self.n_points, self.batch = seed, grid_size, n_points, batch

    def after_step(self, trainer: Trainer, loss: float) -> None:
        if trainer.dist.is_main and trainer.step % self.every == 0:
            monitor.write_sample_grid(
                self.model,
                self.system,
                self.run_dir / "samples" / f"step-{trainer.step:08d}.png",
                seed=self.seed,
                grid_size=self.grid_size,
                n_points=self.n_points,
                batch=self.batch,
            )


class Checkpoints(Callback):
    """A checkpoint every ``every`` steps, at the last step and before the run stops; then
    every callback's ``after_checkpoint``. Temporary files of a killed run go at the start."""

    def __init__(self, run_dir: Path, every: int) -> None:
        self.run_dir, self.every = run_dir, every

    def running(self, trainer: Trainer, total: int) -> AbstractContextManager[Any]:
        self.total = total
        if trainer.dist.is_main:
            remove_stale_temps(self.run_dir)
        return contextlib.nullcontext()

    def end_of_step(self, trainer: Trainer) -> None:
        step = trainer.step
        if step % self.every == 0 or step == self.total or trainer.stopping:
            path = trainer.save()
            for callback in trainer.callbacks:
                callback.after_checkpoint(trainer, path)


class StopOnSignals(Callback):
    """SIGINT or SIGTERM: finish the step, make sure a checkpoint holds it, raise
    ``Interrupted`` (exit 130 or 143); ``--resume`` continues exactly from there."""

    def running(self, trainer: Trainer, total: int) -> AbstractContextManager[Any]:
        return self._handlers()

    @contextlib.contextmanager
    def _handlers(self) -> Iterator[None]:
        with stop_on_signals() as self.request:
            yield

    def end_of_step(self, trainer: Trainer) -> None:
        if trainer.stopping or not distributed.any_over_ranks(self.request.signum is not None):
            return
        saved = trainer.saved_at == trainer.step
        path = trainer.last_checkpoint if saved else trainer.save()
        signum = self.request.signum or signal.SIGTERM
        raise Interrupted(
            f"interrupted at step {trainer.step} by {signal.Signals(signum).name}; "
            f"the checkpoint {path} holds it; resume with --resume",
            signum,
        )
