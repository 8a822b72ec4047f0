"""FID of a run's checkpoints and EMAs as EDM computes it: sample by seed, Inception statistics, fid.json.

Each student is rebuilt from its checkpoint alone (``odedistill.infra.students``): neither
the recipe's teacher nor the EMAs that are not scored are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from odedistill.errors import UserError
from odedistill.evaluation.features import FIDScorer, default_seeds
from odedistill.evaluation.results import make_records, read_results, record_results
from odedistill.infra.checkpoint import select_checkpoints
from odedistill.infra.devices import resolve_device
from odedistill.infra.distributed import DistEnv
from odedistill.infra.students import (
    load_weights,
    read_checkpoint,
    rebuild_student,
    rebuild_system,
    student_spec,
    weight_names,
)
from odedistill.models.base import TrajectoryModel
from odedistill.sampling.samplers import StudentSampler
from odedistill.systems.base import ODESystem


class _CheckpointStudents:
    """The students of a run's checkpoints, one model reused for every set of weights."""

    def __init__(self, first: Path, device: torch.device) -> None:
        state = read_checkpoint(first)
        spec = student_spec(state, str(first))
        self.model: TrajectoryModel = rebuild_student(spec, str(first)).to(device)
        system = rebuild_system(spec, str(first))
        if system is None:
            raise UserError(
                f"{first}: the run's system is a Python object or a user's module, which "
                "reading a checkpoint never rebuilds; compute FID through the library with your system"
            )
        self.system: ODESystem = system

    def sampler(self, state: dict[str, Any], name: str, where: str) -> StudentSampler:
        return StudentSampler(load_weights(self.model, state, name, where), self.system)


def _score_checkpoint(
    path: Path, students: _CheckpointStudents, weights: str, scorer: FIDScorer
) -> list[dict[str, Any]]:
    state = read_checkpoint(path)
    step = int(state.get("step", 0))
    fids = {
        name: scorer.score(students.sampler(state, name, str(path)), f"FID step {step} {name}")
        for name in weight_names(state, weights)
    }
    return make_records(fids, scorer.describe(), step, path)


def evaluate_checkpoint(
    run_dir: str | Path,
    checkpoint: str | Path | int,
    *,
    ref: str | Path | None = None,
    detector: str | Path | None = None,
    num: int = 50000,
    seeds: Sequence[int] | None = None,
    weights: str = "all",
    batch: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
    scorer: FIDScorer | None = None,
    dist: DistEnv | None = None,
    write: bool = True,
) -> list[dict[str, Any]]:
    """FID of the weights ``weights`` names in one checkpoint; merged into fid.json and fid.csv.

    The hook for evaluation during training: call it after a checkpoint is saved. It rebuilds
    the student from the checkpoint file, so it shares no state with the trainer, and it
    restores the global RNG state, so training continues exactly as without it.

    Args:
        run_dir: the run directory, where fid.json and fid.csv are written.
        checkpoint: a checkpoint file, or a step of ``run_dir``'s checkpoints.
        ref, detector: reference statistics .npz and TorchScript Inception (or give ``scorer``).
        num, seeds: the images: seeds 0 … num − 1 unless ``seeds`` are given.
        weights: 'all' (raw and every EMA), 'ema', 'raw', a rate, or a comma list of these.
        scorer: a ready :class:`FIDScorer` (keeps the detector loaded between calls).
        write: merge the results into fid.json / fid.csv (rank 0 only).

    Returns:
        One record per weights: step, weights, fid, num_images, seeds, ref, detector, checkpoint.
    """
    dist = dist or DistEnv()
    dev = resolve_device(device)
    if isinstance(checkpoint, int):
        path = dict(select_checkpoints(run_dir, "all")).get(checkpoint)
        if path is None:
            raise UserError(f"{run_dir} has no checkpoint of step {checkpoint}")
    else:
        path = Path(checkpoint)
    if scorer is None:
        if ref is None or detector is None:
            raise UserError("FID needs --ref (reference statistics) and --detector (Inception)")
        scorer = FIDScorer(
            ref,
            detector,
            seeds if seeds is not None else default_seeds(num),
            batch=batch,
            device=dev,
            progress=progress,
            dist=dist,
        )
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        students = _CheckpointStudents(path, dev)
        scorer.check(StudentSampler(students.model, students.system))
        records = _score_checkpoint(path, students, weights, scorer)
    if write and dist.is_main:
        record_results(run_dir, records)
    return records


def evaluate_run(
    run_dir: str | Path,
    *,
    ref: str | Path,
    detector: str | Path,
    ckpt: str = "all",
    weights: str = "all",
    num: int | None = None,
    seeds: Sequence[int] | None = None,
    batch: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    dist: DistEnv | None = None,
) -> list[dict[str, Any]]:
    """``odedistill eval``: FID of the named weights of the named checkpoints of a run.

    Every input is checked before the first image is drawn; results are merged into fid.json
    and fid.csv after each checkpoint, so an interrupted evaluation keeps what it finished.
    """
    dist = dist or DistEnv()
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    if seeds is None:
        seeds = default_seeds(50000 if num is None else num)
    elif num is not None and num != len(seeds):
        raise UserError(f"--num {num} disagrees with --seeds, which name {len(seeds)} images")
    checkpoints = select_checkpoints(run_dir, ckpt)
    read_results(run_dir)  # an unreadable fid.json is an error now, not after sampling
    scorer = FIDScorer(ref, detector, seeds, batch=batch, device=dev, progress=progress, dist=dist)
    records: list[dict[str, Any]] = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        first = checkpoints[0][1]
        students = _CheckpointStudents(first, dev)
        weight_names(read_checkpoint(first), weights)  # a bad --weights fails before sampling
        scorer.check(StudentSampler(students.model, students.system))  # all checked: now sample
        for _, path in checkpoints:
            new = _score_checkpoint(path, students, weights, scorer)
            if dist.is_main:
                record_results(run_dir, new)
            records += new
    return records
