"""The PID training loop: draw z and collocation indices, minimise the residual, keep EMAs and checkpoints."""

from __future__ import annotations

import json
import time
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

from odedistill._io import atomic_write_json, atomic_write_text
from odedistill.distances import Distance
from odedistill.errors import TrainingDiverged, UserError
from odedistill.loss import pid_loss
from odedistill.models.boundary import BoundaryTrajectory
from odedistill.schemes.base import ResidualScheme
from odedistill.systems.base import ODESystem
from odedistill.training import build
from odedistill.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from odedistill.training.config import Config, to_toml
from odedistill.training.ema import EMA

NOISE_SEED_OFFSET = 0x5EED


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


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines past ``last_step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= last_step
    ]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


class Trainer:
    """Runs PID on a ``Session`` and writes metrics and checkpoints into ``run_dir``."""

    def __init__(self, session: Session, run_dir: Path, distance: Distance | None = None) -> None:
        self.s = session
        self.cfg = session.cfg
        self.run_dir = Path(run_dir)
        self.distance = (distance or build.build_distance(self.cfg)).to(session.device)
        self.opt = build.build_optimizer(self.cfg, session.model.parameters())
        self.gen = torch.Generator().manual_seed(self.cfg.run.seed + NOISE_SEED_OFFSET)
        self.step = 0
        self.last_checkpoint: Path | None = None

    # ------------------------------------------------------------ state I/O
    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "noise": self.gen.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": "odedistill-checkpoint-1",
            "step": self.step,
            "model": self.s.model.state_dict(),
            "ema": self.s.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": rng,
            "config": json.dumps(self.cfg.to_dict()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.s.model.load_state_dict(state["model"])
        self.s.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.gen.set_state(state["rng"]["noise"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])

    def resume(self) -> int:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise UserError(
                f"nothing to resume in {self.run_dir}: it has no checkpoint; run without --resume"
            )
        self.load_state_dict(load_checkpoint(path, map_location=self.s.device))
        self.last_checkpoint = path
        _trim_metrics(self.run_dir / "metrics.jsonl", self.step)
        return self.step

    def save(self) -> Path:
        self.last_checkpoint = save_checkpoint(
            self.run_dir, self.step, self.state_dict(), keep=self.cfg.train.keep_checkpoints
        )
        return self.last_checkpoint

    # ------------------------------------------------------------ one step
    def train_step(self) -> torch.Tensor:
        s, cfg = self.s, self.cfg
        z, idx, cond = draw_batch(s.system, s.grid.shape[0], cfg.train.batch, self.gen, s.device)
        loss = pid_loss(s.model, s.system, s.scheme, self.distance, s.grid, z, idx, cond).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.optim.grad_clip)
        return loss.detach()

    def run(
        self,
        iterations: int | None = None,
        show_progress: bool = True,
        console: Console | None = None,
    ) -> None:
        """Train up to ``iterations`` total steps (the config's by default)."""
        cfg = self.cfg
        total = iterations or cfg.train.iterations
        metrics_path = self.run_dir / "metrics.jsonl"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        console = console or Console(stderr=True)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]} it/s"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=not show_progress,
        )
        loss_sum, loss_n, t_last, step_last = 0.0, 0, time.perf_counter(), self.step
        t_start = time.perf_counter()
        with progress, open(metrics_path, "a", encoding="utf-8") as metrics:
            task = progress.add_task(
                "distilling", total=total, completed=self.step, speed="-", loss="-"
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
                self.opt.step()
                self.s.ema.update(self.s.model)
                self.step += 1
                loss_sum, loss_n = loss_sum + value, loss_n + 1
                if self.step % cfg.train.log_every == 0 or self.step == total:
                    now = time.perf_counter()
                    rate = (self.step - step_last) / max(now - t_last, 1e-9)
                    record = {
                        "step": self.step,
                        "loss": loss_sum / loss_n,
                        "it_per_s": rate,
                        "samples_per_s": rate * cfg.train.batch,
                        "elapsed_s": now - t_start,
                        "lr": self.opt.param_groups[0]["lr"],
                    }
                    if self.s.device.type == "cuda":
                        record["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    progress.update(task, speed=f"{rate:.1f}", loss=f"{loss_sum / loss_n:.4g}")
                    loss_sum, loss_n, t_last, step_last = 0.0, 0, now, self.step
                progress.update(task, completed=self.step)
                if self.step % cfg.train.checkpoint_every == 0 or self.step == total:
                    self.save()
