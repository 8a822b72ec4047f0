"""The PID training loop: draw z and collocation indices, minimise the residual, keep EMAs and checkpoints.

One step: each process draws its share of the batch from its own noise stream, splits it
into micro-batches, accumulates the gradient of the PID loss (Tee et al. 2024, eq. 9) over
them, averages it over the processes (DistributedDataParallel), then takes one optimiser
step and updates the EMAs. With one process and no micro-batching this is exactly the
single-batch step.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from odedistill._io import atomic_write_json, atomic_write_text
from odedistill.distances import Distance
from odedistill.errors import TrainingDiverged, UserError
from odedistill.models.base import TrajectoryModel
from odedistill.models.boundary import BoundaryTrajectory
from odedistill.schemes.base import ResidualScheme
from odedistill.systems.base import ODESystem
from odedistill.training import build, distributed, monitor
from odedistill.training.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from odedistill.training.config import Config, to_toml
from odedistill.training.ema import EMA
from odedistill.training.precision import (
    Precision,
    autocast_forward,
    channels_last,
    checkpoint_blocks,
    set_tf32,
)

NOISE_SEED_OFFSET = 0x5EED

# The student's buffers (resampling filters, Fourier frequencies) are constants: DDP need not
# broadcast them before every forward. The keyword changed name in PyTorch 2.12.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


@dataclass
class Session:
    """Everything a run needs, built from its config."""

    cfg: Config
    device: torch.device
    system: ODESystem
    model: BoundaryTrajectory
    ema: EMA
    scheme: ResidualScheme
    grid: torch.Tensor


def build_session(cfg: Config, device: torch.device | None = None) -> Session:
    """Seed, then build system, student, EMAs, scheme and grid for ``cfg``."""
    device = device or build.resolve_device(cfg.run.device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    system = build.build_system(cfg, device)
    model = build.build_student(cfg, system).to(device)
    return Session(
        cfg=cfg,
        device=device,
        system=system,
        model=model,
        ema=EMA(model, cfg.train.ema_rates),
        scheme=build.build_scheme(cfg),
        grid=build.build_grid(cfg, system, device),
    )


def noise_generator(seed: int, stream: int = 0) -> torch.Generator:
    """The noise stream ``stream`` of a run (stream r is what rank r draws from)."""
    return torch.Generator().manual_seed(seed + NOISE_SEED_OFFSET + stream)


def draw_batch(
    system: ODESystem, N: int, batch: int, gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """z, collocation indices i ~ U{0..N-1} and conditions, from the run's noise stream."""
    z = system.sample_initial(batch, gen)
    idx = torch.randint(0, N, (batch,), generator=gen)
    cond = system.sample_condition(batch, gen)
    return z.to(device), idx.to(device), None if cond is None else cond.to(device)


def write_run_config(cfg: Config, run_dir: Path) -> None:
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    atomic_write_text(run_dir / "config.toml", to_toml(cfg))


def chosen_student(cfg: Config) -> str:
    """Name of the weights reported as 'student': 'raw' or 'ema<rate>' (from ``eval.ema``)."""
    if cfg.eval.ema == 0.0 or not cfg.train.ema_rates:
        return "raw"
    rate = cfg.train.ema_rates[0] if cfg.eval.ema == -1.0 else cfg.eval.ema
    return f"ema{float(rate)!r}"


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines past ``last_step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= last_step
    ]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


class PIDObjective(nn.Module):
    """Per-sample PID loss d(y - t v, sg[D(y; t)]) of the student: the module DDP wraps.

    The student's evaluations (fused or not) and the distance carry gradients; the teacher
    runs under ``torch.inference_mode`` and its output is cloned into a normal tensor before
    autograd sees it. Networks run in the run's precision; the loss comes back as float32.
    """

    def __init__(
        self,
        model: BoundaryTrajectory,
        system: ODESystem,
        scheme: ResidualScheme,
        distance: Distance,
        grid: torch.Tensor,
        precision: Precision,
    ) -> None:
        super().__init__()
        self.model = model
        # a tuple keeps the teacher and the distance out of the module tree (and out of DDP)
        self._parts = (system, scheme, distance, grid, precision)

    def forward(
        self, z: torch.Tensor, idx: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        system, scheme, distance, grid, precision = self._parts
        t, y, v = scheme(self.model, grid, z, idx, cond)
        pred = system.to_target(y, t, v)
        with torch.inference_mode(), precision.autocast():
            target = system.target(y.detach(), t, cond)
        target = target.clone()  # an inference tensor cannot be saved for backward
        with precision.autocast():
            losses = distance(pred, target.to(pred.dtype))
        return losses.float()


class Trainer:
    """Runs PID on a ``Session`` and writes metrics and checkpoints into ``run_dir``.

    Under torchrun (a process group exists) the student is wrapped in DistributedDataParallel
    and only rank 0 writes files. ``noise_streams`` (tests) makes one process draw its batch
    as that many rank streams concatenated, which is what as many ranks draw together.
    """

    def __init__(
        self,
        session: Session,
        run_dir: Path,
        distance: Distance | None = None,
        noise_streams: int | None = None,
    ) -> None:
        self.s = session
        self.cfg = cfg = session.cfg
        self.run_dir = Path(run_dir)
        self.dist = distributed.current()
        tc = cfg.train
        device = session.device
        self.precision = Precision(tc.precision, device.type)
        self.distance = (distance or build.build_distance(cfg)).to(device)
        if self.dist.enabled and noise_streams not in (None, 1):
            raise ValueError("noise_streams emulates ranks in one process; not under torchrun")
        # noise: stream r belongs to rank r; one process may emulate several
        self.streams = [self.dist.rank] if self.dist.enabled else list(range(noise_streams or 1))
        self.gens = [noise_generator(cfg.run.seed, r) for r in self.streams]
        self.gen = self.gens[0]
        parts = self.dist.world_size * len(self.streams)
        if tc.batch % parts:
            raise UserError(
                f"'train.batch' = {tc.batch} does not split over {parts} processes; use a "
                f"multiple of {parts}"
            )
        self.share = tc.batch // self.dist.world_size  # samples this process draws per step
        self.micro = min(tc.micro_batch or self.share, self.share)
        if self.dist.enabled and self.dist.rank > 0:
            torch.manual_seed(cfg.run.seed + self.dist.rank)  # own dropout masks per rank
        self._prepare_networks()
        self.objective: nn.Module = PIDObjective(
            session.model,
            session.system,
            session.scheme,
            self.distance,
            session.grid,
            self.precision,
        )
        if self.dist.enabled:
            self.objective = nn.parallel.DistributedDataParallel(
                self.objective,
                device_ids=[device.index] if device.type == "cuda" else None,
                **_NO_BUFFER_SYNC,
            )
        self.opt = build.build_optimizer(cfg, session.model.parameters())
        self.scaler = self.precision.make_scaler()
        self.step = 0
        self.last_checkpoint: Path | None = None
        self._fid: Any = None  # the FID scorer of eval.fid_every, loaded on first use

    def _prepare_networks(self) -> None:
        """Apply the run's precision, memory layout, checkpointing and compilation options."""
        tc, s = self.cfg.train, self.s
        if s.device.type == "cuda":
            set_tf32(tc.tf32)
        teacher = getattr(s.system, "denoiser", None)
        teacher = teacher if isinstance(teacher, nn.Module) else None
        net = s.model.net
        if tc.channels_last and s.system.is_image:
            channels_last(net)
            if teacher is not None:
                channels_last(teacher)
        if tc.checkpoint_activations:
            if s.scheme.needs_forward_ad:
                raise UserError(
                    "train.checkpoint_activations does not work with scheme.kind = 'autodiff' "
                    "(no forward-mode rule through recomputation); use 'upwind' or 'central'"
                )
            checkpoint_blocks(net)
        autocast_forward(net, self.precision)
        if tc.compile:
            net.compile()
            if teacher is not None:
                teacher.compile()

    # ------------------------------------------------------------ state I/O
    def _rank_rng(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.s.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.s.device)
        return rng

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's content; under torchrun every rank must call it (RNG states are gathered)."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "noise": self.gen.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.dist.enabled:
            gathered = distributed.all_gather_objects(
                {"noise": self.gen.get_state(), **self._rank_rng()}
            )
            rng["noise_streams"] = [g["noise"] for g in gathered]
            rng["ranks"] = [{k: v for k, v in g.items() if k != "noise"} for g in gathered]
        elif len(self.gens) > 1:
            rng["noise_streams"] = [g.get_state() for g in self.gens]
        state = {
            "format": "odedistill-checkpoint-1",
            "step": self.step,
            "model": self.s.model.state_dict(),
            "ema": self.s.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": rng,
            "config": json.dumps(self.cfg.to_dict()),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.dist.enabled:
            state["world_size"] = self.dist.world_size
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.s.model.load_state_dict(state["model"])
        self.s.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        rng = state["rng"]
        ranks = rng.get("ranks")
        if self.dist.enabled and ranks is not None and len(ranks) == self.dist.world_size:
            mine = ranks[self.dist.rank]
            torch.set_rng_state(mine["torch"].cpu())
            if "cuda" in mine and self.s.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"].cpu(), self.s.device)
        elif self.dist.is_main:
            torch.set_rng_state(rng["torch"].cpu())
            if "cuda" in rng and torch.cuda.is_available():
                states = rng["cuda"]
                if len(states) == torch.cuda.device_count():
                    torch.cuda.set_rng_state_all([t.cpu() for t in states])
        saved = rng.get("noise_streams") or [rng["noise"]]
        total = self.dist.world_size * len(self.streams)
        if len(saved) == total:
            for gen, stream in zip(self.gens, self.streams, strict=True):
                gen.set_state(saved[stream].cpu())
        else:
            warnings.warn(
                f"the checkpoint holds {len(saved)} noise streams but this run draws {total}; "
                "the streams restart from seeds that depend on the step, so the resumed run "
                "is not bit-identical to an uninterrupted one",
                stacklevel=2,
            )
            for gen, stream in zip(self.gens, self.streams, strict=True):
                gen.manual_seed(self.cfg.run.seed + NOISE_SEED_OFFSET + stream + 7919 * self.step)

    def resume(self) -> int:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise UserError(
                f"nothing to resume in {self.run_dir}: it has no checkpoint; run without --resume"
            )
        self.load_state_dict(load_checkpoint(path, map_location=self.s.device))
        self.last_checkpoint = path
        if self.dist.is_main:
            _trim_metrics(self.run_dir / "metrics.jsonl", self.step)
        return self.step

    def save(self) -> Path:
        """Write a checkpoint (rank 0); under torchrun every rank must call it."""
        state = self.state_dict()
        if self.dist.is_main:
            self.last_checkpoint = save_checkpoint(
                self.run_dir, self.step, state, keep=self.cfg.train.keep_checkpoints
            )
        else:
            self.last_checkpoint = checkpoint_path(self.run_dir, self.step)
        return self.last_checkpoint

    # ------------------------------------------------------------ one step
    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This process's share of the batch: its stream's (or the emulated streams') draws."""
        s = self.s
        n = self.share // len(self.gens)
        parts = [draw_batch(s.system, s.grid.shape[0], n, g, s.device) for g in self.gens]
        if len(parts) == 1:
            return parts[0]
        z, idx, cond = zip(*parts, strict=True)
        return torch.cat(z), torch.cat(idx), None if cond[0] is None else torch.cat(cond)

    def train_step(self) -> torch.Tensor:
        """Accumulate the gradient of one batch (all micro-batches, all ranks); return its mean loss."""
        cfg = self.cfg
        z, idx, cond = self.draw()
        if self.cfg.train.channels_last and z.ndim == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        self.opt.zero_grad(set_to_none=True)
        starts = list(range(0, self.share, self.micro))
        total: torch.Tensor | None = None
        for k, a in enumerate(starts):
            sl = slice(a, a + self.micro)
            last = k == len(starts) - 1
            sync = contextlib.nullcontext()
            if self.dist.enabled and not last:
                sync = self.objective.no_sync()
            with sync:
                losses = self.objective(z[sl], idx[sl], None if cond is None else cond[sl])
                # the mean over this process's share, whatever the micro-batching
                loss = losses.mean() if len(starts) == 1 else losses.sum() / self.share
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None
        total = distributed.mean_over_ranks(total)
        if cfg.optim.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.s.model.parameters(), cfg.optim.grad_clip)
        return total

    def optimizer_step(self) -> None:
        """One optimiser step (through the loss scaler for fp16) and the EMA updates."""
        if self.scaler is None:
            self.opt.step()
        else:
            self.scaler.step(self.opt)
            self.scaler.update()
        self.s.ema.update(self.s.model)
        self.step += 1

    # ------------------------------------------------------------ monitoring
    def monitor_model(self) -> TrajectoryModel:
        """The weights the sample grids show: those ``eval.ema`` reports."""
        name = chosen_student(self.cfg)
        return self.s.model if name == "raw" else self.s.ema.models[name[3:]]

    def write_samples(self) -> Path | None:
        """samples/step-XXXXXXXX.png from the fixed seed ``eval.seed`` (rank 0)."""
        e = self.cfg.eval
        path = self.run_dir / "samples" / f"step-{self.step:08d}.png"
        return monitor.write_sample_grid(
            self.monitor_model(),
            self.s.system,
            path,
            seed=e.seed,
            grid_size=e.grid_size,
            n_points=e.n_heldout,
            batch=max(self.micro, 1),
        )

    def log_fid(self, metrics: Any) -> None:
        """FID of the checkpoint just saved, into fid.json/fid.csv and a metrics line (all ranks)."""
        from odedistill.evaluation.run_eval import FIDScorer, default_seeds, evaluate_checkpoint

        e = self.cfg.eval
        if self._fid is None:
            self._fid = FIDScorer(
                e.fid_ref,
                e.fid_detector,
                default_seeds(e.fid_num),
                device=self.s.device,
                progress=False,
                dist=self.dist,
            )
        distributed.barrier()  # rank 0's checkpoint is on disk
        records = evaluate_checkpoint(
            self.run_dir,
            self.last_checkpoint or self.step,
            weights=e.fid_weights,
            device=self.s.device,
            scorer=self._fid,
            dist=self.dist,
        )
        if self.dist.is_main:
            fids = {r["weights"]: r["fid"] for r in records}
            metrics.write(json.dumps({"step": self.step, "fid": fids}) + "\n")
            metrics.flush()

    def write_run_info(self) -> Path:
        tc = self.cfg.train
        info = monitor.run_info(
            self.s.device,
            self.dist.world_size,
            precision=tc.precision,
            autocast_dtype=None if self.precision.dtype is None else str(self.precision.dtype),
            grad_scaler=self.scaler is not None,
            tf32=bool(tc.tf32 and self.s.device.type == "cuda"),
            channels_last=tc.channels_last,
            compile=tc.compile,
            checkpoint_activations=tc.checkpoint_activations,
            batch=tc.batch,
            batch_per_process=self.share,
            micro_batch=self.micro,
            accumulation_steps=-(-self.share // self.micro),
            start_step=self.step,
            parameters=sum(p.numel() for p in self.s.model.parameters()),
        )
        return atomic_write_json(self.run_dir / "run_info.json", info)

    def run(
        self,
        iterations: int | None = None,
        show_progress: bool = True,
        console: Console | None = None,
    ) -> None:
        """Train up to ``iterations`` total steps (the config's by default)."""
        tc = self.cfg.train
        main = self.dist.is_main
        total = iterations or tc.iterations
        self.run_dir.mkdir(parents=True, exist_ok=True)
        console = console or Console(stderr=True)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]} it/s {task.fields[throughput]} samples/s"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("mem {task.fields[mem]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=not (show_progress and main),
        )
        if main:
            self.write_run_info()
        metrics_cm = (
            open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
            if main
            else contextlib.nullcontext()
        )
        loss_sum, loss_n, t_last, step_last = 0.0, 0, time.perf_counter(), self.step
        t_start = time.perf_counter()
        with progress, metrics_cm as metrics:
            task = progress.add_task(
                "distilling",
                total=total,
                completed=self.step,
                speed="-",
                throughput="-",
                loss="-",
                mem="-",
            )
            while self.step < total:
                loss = self.train_step()
                value = float(loss)
                if not torch.isfinite(loss):
                    where = (
                        f"the last good checkpoint is {self.last_checkpoint}"
                        if self.last_checkpoint
                        else "no checkpoint was written yet"
                    )
                    raise TrainingDiverged(
                        f"loss became {value} at step {self.step + 1}; training stopped and "
                        f"{where}; lower optim.lr or set optim.grad_clip"
                    )
                self.optimizer_step()
                loss_sum, loss_n = loss_sum + value, loss_n + 1
                if main and (self.step % tc.log_every == 0 or self.step == total):
                    now = time.perf_counter()
                    rate = (self.step - step_last) / max(now - t_last, 1e-9)
                    mem, mem_kind = monitor.peak_memory_gib(self.s.device)
                    record = {
                        "step": self.step,
                        "loss": loss_sum / loss_n,
                        "it_per_s": rate,
                        "samples_per_s": rate * tc.batch,
                        **({"images_per_s": rate * tc.batch} if self.s.system.is_image else {}),
                        "elapsed_s": now - t_start,
                        "eta_s": (total - self.step) / max(rate, 1e-9),
                        "lr": self.opt.param_groups[0]["lr"],
                        "peak_mem_gib": mem,
                        "peak_mem_kind": mem_kind,
                    }
                    if self.scaler is not None:
                        record["loss_scale"] = float(self.scaler.get_scale())
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    progress.update(
                        task,
                        speed=f"{rate:.2f}",
                        throughput=f"{rate * tc.batch:.1f}",
                        loss=f"{loss_sum / loss_n:.4g}",
                        mem=f"{mem:.2f} GiB",
                    )
                    loss_sum, loss_n, t_last, step_last = 0.0, 0, now, self.step
                progress.update(task, completed=self.step)
                if main and tc.sample_every and self.step % tc.sample_every == 0:
                    self.write_samples()
                if self.step % tc.checkpoint_every == 0 or self.step == total:
                    self.save()
                    fid_every = self.cfg.eval.fid_every
                    if fid_every and self.step % fid_every == 0:
                        self.log_fid(metrics)
        distributed.barrier()  # every rank returns once rank 0's files are written
