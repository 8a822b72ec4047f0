"""The composition root of a training run: its config read once, into the step's inputs and the run's callbacks.

Nothing after ``assemble`` reads the config: the loop, the step and the callbacks hold what
they need as plain values.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from odedistill.infra.build import (
    Session,
    build_distance,
    build_optimizer,
    learning_rate,
    reported_weights,
    weights_of,
)
from odedistill.infra.distributed import DistEnv
from odedistill.infra.noise import NoiseStreams
from odedistill.infra.precision import Precision, prepare_networks
from odedistill.training.callbacks import (
    Callback,
    Checkpoints,
    MetricsLogging,
    ProgressDisplay,
    SampleGrids,
    StopOnSignals,
    TimeBudget,
)
from odedistill.training.loop import StepInputs
from odedistill.training.objective import make_objective
from odedistill.training.validation import Validation

# The student's buffers (resampling filters, Fourier frequencies) are constants: DDP need not
# broadcast them before every forward. The keyword changed name in PyTorch 2.12.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


@dataclass(frozen=True)
class Assembly:
    """A run's parts, built from its config: the step's inputs, the callbacks in the order they
    act, and the few settings of the trainer's own (its end, what a checkpoint holds)."""

    inputs: StepInputs
    callbacks: list[Callback]
    validation: Validation | None  # train.validate_every's check, also among the callbacks
    progress: ProgressDisplay  # shown or not by Trainer.run
    iterations: int  # train.iterations: where run() ends by default
    keep_checkpoints: int  # train.keep_checkpoints
    probe_seed: int  # eval.seed: the fixed z whose samples a checkpoint's weights must keep sane
    config_json: str  # the resolved config, as checkpoints record it
    setup_seconds: float = 0.0  # training work before the first step (loss.solved's solve)


def assemble(
    session: Session,
    run_dir: Path,
    noise: NoiseStreams,
    dist: DistEnv,
    hooks: list[Callback],
) -> Assembly:
    """Build a run on ``session`` in ``run_dir`` from its config; ``hooks`` act after the time
    budget and before validation, logging, samples, checkpoints and signals."""
    cfg, tc, device = session.cfg, session.cfg.train, session.device
    precision = Precision(tc.precision, device.type)
    distance = build_distance(cfg).to(device)
    share = tc.batch // dist.world_size  # samples this process draws per step
    micro = min(tc.micro_batch or share, share)
    if dist.enabled and dist.rank > 0:
        torch.manual_seed(cfg.run.seed + dist.rank)  # own dropout masks per rank
    prepare_networks(
        session.model.net,
        session.system.teacher,
        tc,
        precision,
        image=session.system.is_image,
        forward_ad=session.scheme.needs_forward_ad,
        cuda=device.type == "cuda",
    )
    objective, indices, setup_seconds = make_objective(session, distance, precision)
    if dist.enabled:
        objective = nn.parallel.DistributedDataParallel(
            objective,
            device_ids=[device.index] if device.type == "cuda" else None,
            **_NO_BUFFER_SYNC,
        )
    optimizer = build_optimizer(cfg, session.model.parameters())
    inputs = StepInputs(
        model=session.model,
        objective=objective,
        noise=noise,
        indices=indices,
        system=session.system,
        N=session.grid.shape[0],
        device=device,
        optimizer=optimizer,
        scaler=precision.make_scaler(),
        ema=session.ema,
        lr=functools.partial(learning_rate, cfg),
        share=share,
        micro=micro,
        grad_clip=cfg.optim.grad_clip,
        channels_last=tc.channels_last,
        clock=time.process_time if tc.clock == "process" else time.perf_counter,
        ddp=dist.enabled,
    )
    info = run_info(session, precision, inputs, dist)
    metrics = MetricsLogging(run_dir, tc.log_every, tc.batch, session.system.is_image, info)
    validation = Validation(session) if tc.validate_every else None
    callbacks: list[Callback] = [TimeBudget(tc.max_seconds)] if tc.max_seconds else []
    callbacks += [*hooks, *([validation] if validation else [])]
    progress = ProgressDisplay(metrics, validation is not None)
    callbacks += [metrics, progress]
    if tc.sample_every:
        e = cfg.eval
        model = weights_of(session)[reported_weights(session)]
        callbacks.append(
            SampleGrids(
                run_dir,
                tc.sample_every,
                model,
                session.system,
                e.seed,
                e.grid_size,
                e.n_heldout,
                batch=max(micro, 1),
            )
        )
    callbacks += [Checkpoints(run_dir, tc.checkpoint_every), StopOnSignals()]
    return Assembly(
        inputs=inputs,
        callbacks=callbacks,
        validation=validation,
        progress=progress,
        iterations=tc.iterations,
        keep_checkpoints=tc.keep_checkpoints,
        probe_seed=cfg.eval.seed,
        config_json=json.dumps(cfg.to_dict()),
        setup_seconds=setup_seconds,
    )


def run_info(session: Session, precision: Precision, p: StepInputs, dist: DistEnv) -> dict:
    """run_info.json's fields from the config: the precision and the batch layout."""
    tc = session.cfg.train
    return {
        "world_size": dist.world_size,
        "precision": tc.precision,
        "autocast_dtype": None if precision.dtype is None else str(precision.dtype),
        "grad_scaler": p.scaler is not None,
        "tf32": bool(tc.tf32 and session.device.type == "cuda"),
        "channels_last": tc.channels_last,
        "compile": tc.compile,
        "checkpoint_activations": tc.checkpoint_activations,
        "batch": tc.batch,
        "batch_per_process": p.share,
        "micro_batch": p.micro,
        "accumulation_steps": -(-p.share // p.micro),
        "parameters": sum(q.numel() for q in session.model.parameters()),
    }
