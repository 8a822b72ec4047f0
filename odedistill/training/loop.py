"""The PID training step and the loop around it (Tee et al. 2024, Algorithm 1; laid out as EDM's training loop).

Per step, on each of W processes, with B_w = batch / W samples split into micro-batches:

    z, i, cond ~ this process's noise stream             (``infra.noise.NoiseStreams``;
                                                          hard states mixed in: ``infra.hard_states``)
    g = ∇_θ (1/B) Σ_b ℓ(θ; z_b, i_b, cond_b)              (accumulated, averaged over processes)
    θ ← optimiser(θ, clip(g), lr(step, seconds));   θ_ema ← β θ_ema + (1 − β) θ

where ℓ is the student kind's objective (PID's residual loss, ``odedistill.pid_loss``). With one
process and no micro-batching this is exactly the single-batch step. Everything the step needs
is built once from the config by ``training.assemble``; everything a run does beside it
(metrics, progress, samples, validation, checkpoints, signals, the time budget) is a callback
(``training.callbacks``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from odedistill.infra import distributed
from odedistill.infra.ema import EMA
from odedistill.infra.noise import Indices, NoiseStreams
from odedistill.models.base import TrajectoryModel
from odedistill.systems.base import ODESystem

#: the run (``odedistill.training.trainer.Trainer``, which imports this module: named here
#: without importing it)
Trainer = Any


@dataclass(frozen=True)
class StepInputs:
    """What one training step needs, resolved from the config once (``training.assemble``)."""

    model: TrajectoryModel  # the student θ
    objective: nn.Module  # per-sample loss ℓ_b(θ), (B,); DistributedDataParallel under torchrun
    noise: NoiseStreams  # this process's streams of z, indices and conditions
    indices: Indices  # how the streams draw the objective's indices (PID's i; a flow map's)
    system: ODESystem  # draws the initial states z and conditions
    N: int  # collocation points: the range of the indices
    device: torch.device
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # fp16's dynamic loss scaling, None otherwise
    ema: EMA  # θ_ema, one per rate
    lr: Callable[[int, float], float]  # the learning rate at (step, train seconds)
    share: int  # samples this process draws per step: batch / processes
    micro: int  # samples per micro-batch (gradient accumulation), at most ``share``
    grad_clip: float  # largest gradient norm; 0: no clipping
    channels_last: bool  # image batches in channels-last memory format
    clock: Callable[[], float]  # what train_seconds counts: process or wall seconds
    ddp: bool  # the objective is DDP-wrapped: gradients sync on the last micro-batch only


def accumulate_gradients(p: StepInputs) -> torch.Tensor:
    """Draw this process's share of one batch and accumulate ∇_θ of its mean loss into θ.grad.

    Returns the batch's mean loss, averaged over processes. Micro-batches add up to the
    share's mean (sum / share), so any micro-batching gives the one-batch gradient.
    """
    z, idx, cond, w = p.noise.draw_weighted(p.system, p.N, p.device, p.indices)
    if p.channels_last and z.ndim == 4:
        z = z.contiguous(memory_format=torch.channels_last)
    p.optimizer.zero_grad(set_to_none=True)
    starts = list(range(0, p.share, p.micro))
    total: torch.Tensor | None = None
    seen: list[torch.Tensor] = []  # the per-sample losses, for hard-state replay
    for k, a in enumerate(starts):
        sl = slice(a, a + p.micro)
        last = k == len(starts) - 1
        with p.objective.no_sync() if p.ddp and not last else contextlib.nullcontext():
            part = [t[sl] for t in idx]
            losses = p.objective(z[sl], *part, None if cond is None else cond[sl])
            seen.append(losses.detach())
            if w is not None:  # hard-state replay's importance weights
                losses = losses * w[sl]
            # the mean over this process's share, whatever the micro-batching
            loss = losses.mean() if len(starts) == 1 else losses.sum() / p.share
            (loss if p.scaler is None else p.scaler.scale(loss)).backward()
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None
    p.noise.observe(torch.cat(seen))
    total = distributed.mean_over_ranks(total)
    if p.grad_clip > 0:
        if p.scaler is not None:
            p.scaler.unscale_(p.optimizer)
        torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.grad_clip)
    return total


def update_weights(p: StepInputs, step: int, seconds: float) -> None:
    """θ ← one optimiser step at lr(step, seconds) (through the loss scaler for fp16); then the EMAs."""
    lr = p.lr(step, seconds)
    for group in p.optimizer.param_groups:
        group["lr"] = lr
    if p.scaler is None:
        p.optimizer.step()
    else:
        p.scaler.step(p.optimizer)
        p.scaler.update()
    p.ema.update(p.model)


def training_loop(trainer: Trainer, total: int) -> None:
    """Train to step ``total``: each step, then the callbacks, until done or asked to stop.

    ``trainer`` holds the state the loop moves on (``step``, ``train_seconds``, ``stop_reason``,
    ``stopping``), the step's inputs (``trainer.inputs``) and the callbacks, in the order they
    act (``trainer.callbacks``). A loss that is not sane (``trainer.guard``) ends the run with
    ``TrainingDiverged`` before the weights it came from are stepped on.
    """
    p, callbacks = trainer.inputs, trainer.callbacks
    trainer.stopping = False
    with contextlib.ExitStack() as stack:
        for callback in callbacks:  # metrics.jsonl, the progress bar, signal handlers
            stack.enter_context(callback.running(trainer, total))
        while trainer.step < total:
            tick = p.clock()

            # Accumulate gradients over this process's micro-batches.
            loss = accumulate_gradients(p)
            value = float(loss)  # the mean over all processes
            if (problem := trainer.guard.problem(value)) is not None:
                raise trainer.diverged(f"{problem} at step {trainer.step + 1}", loss=True)

            # Update weights at the scheduled learning rate, then the EMAs.
            update_weights(p, trainer.step, trainer.train_seconds)
            trainer.step += 1

            # Time the step, the same on every rank: the schedule and the budget read it.
            seconds = torch.tensor([p.clock() - tick], device=loss.device)
            trainer.train_seconds += float(distributed.mean_over_ranks(seconds))

            # Maintenance: every callback sees the step, and any may ask the run to stop;
            # once all ranks agree on stopping, checkpoints are written and signals obeyed.
            for callback in callbacks:
                callback.after_step(trainer, value)
            trainer.stopping = distributed.any_over_ranks(trainer.stop_reason is not None)
            for callback in callbacks:
                callback.end_of_step(trainer)
            if trainer.stopping:
                break
