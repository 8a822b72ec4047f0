"""FID of a run's checkpoints and EMAs as EDM computes it: sample by seed, Inception statistics, fid.json."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odedistill._io import atomic_write_json, atomic_write_text
from odedistill.errors import UserError
from odedistill.evaluation.fid import (
    FeatureStats,
    compute_feature_stats,
    detector_features,
    fid_from_stats,
    load_detector,
    load_ref,
    to_uint8,
)
from odedistill.models.base import TrajectoryModel
from odedistill.sampling import (
    SeedSampler,
    StudentSampler,
    format_seeds,
    generate,
    load_weights,
    read_checkpoint,
    session_of,
    shard_seeds,
    weight_names,
)
from odedistill.systems.base import ODESystem
from odedistill.training.checkpoint import list_checkpoints
from odedistill.training.distributed import DistEnv
from odedistill.training.loop import Session

FID_JSON = "fid.json"
FID_CSV = "fid.csv"
FORMAT = "odedistill-fid-1"
CSV_COLUMNS = (
    "step",
    "weights",
    "fid",
    "num_images",
    "seeds",
    "ref",
    "detector",
    "checkpoint",
    "time",
)


def default_seeds(num: int) -> list[int]:
    """EDM's protocol seeds for ``num`` images: 0 … num − 1."""
    if num < 2:
        raise UserError(f"--num must be at least 2 to compute statistics, got {num}")
    return list(range(num))


class FIDScorer:
    """Reference statistics and detector, loaded once; scores samplers on fixed seeds.

    Each sampler draws one image per seed (per-seed noise, as EDM's generate.py); the images
    go to the detector as uint8 clip(x·127.5 + 128) without touching the disk, which gives the
    same pixels as PNG files would. Under torchrun each rank draws ``seeds[rank::world]`` and
    the float64 feature sums are all-reduced before μ and Σ, as EDM's fid.py does.
    """

    def __init__(
        self,
        ref: str | Path,
        detector: str | Path,
        seeds: Sequence[int],
        *,
        batch: int = 64,
        device: str | torch.device = "cpu",
        progress: bool = True,
        dist: DistEnv | None = None,
    ) -> None:
        if batch < 1:
            raise UserError(f"--batch must be at least 1, got {batch}")
        self.seeds = list(seeds)
        if len(self.seeds) < 2:
            raise UserError(f"FID needs at least 2 images, got {len(self.seeds)} seeds")
        self.ref, self.detector_path = Path(ref), Path(detector)
        self.mu_ref, self.sigma_ref = load_ref(ref)
        self.device = torch.device(device)
        self.detector = load_detector(detector, self.device)
        self.batch = batch
        self.progress = progress
        self.dist = dist or DistEnv()
        self.feature_dim: int | None = None

    def check(self, sampler: SeedSampler) -> None:
        """Raise ``UserError`` unless ``sampler`` makes images whose features match the reference."""
        if not sampler.is_image:
            raise UserError(
                f"FID needs image states (C, H, W); this model's states have shape "
                f"{sampler.state_shape}"
            )
        probe = torch.zeros((2, *sampler.state_shape), dtype=torch.uint8)
        dim = detector_features(self.detector, probe, self.device).shape[1]
        if dim != self.mu_ref.shape[0]:
            raise UserError(
                f"the detector {self.detector_path} gives {dim} features but {self.ref} holds "
                f"statistics of {self.mu_ref.shape[0]}; compute both with the same detector"
            )
        self.feature_dim = dim

    def stats(self, sampler: SeedSampler, description: str = "FID") -> FeatureStats:
        """Feature statistics of the sampler's images for every seed (all ranks together)."""
        self.check(sampler)
        mine = shard_seeds(self.seeds, self.dist)
        batches = (to_uint8(s.x) for _, s in generate(sampler, mine, self.batch))
        stats = compute_feature_stats(
            batches,
            self.detector,
            batch_size=self.batch,
            total=len(mine),
            device=self.device,
            progress=self.progress and self.dist.is_main,
            description=description,
        )
        if self.dist.world_size > 1:
            stats = self._all_reduce(stats)
        return stats

    def score(self, sampler: SeedSampler, description: str = "FID") -> float:
        """FID of the sampler's images for every seed against the reference statistics."""
        mu, sigma = self.stats(sampler, description).mu_sigma()
        return fid_from_stats(mu, sigma, self.mu_ref, self.sigma_ref)

    def _all_reduce(self, stats: FeatureStats) -> FeatureStats:
        assert self.feature_dim is not None
        d = self.feature_dim
        backend = torch.distributed.get_backend()
        dev = self.device if backend == "nccl" else torch.device("cpu")
        # FeatureStats keeps the running sums EDM all-reduces: Σ f, Σ f fᵀ and the count.
        total = torch.zeros(d, dtype=torch.float64) if stats._sum is None else stats._sum
        outer = (
            torch.zeros(d, d, dtype=torch.float64) if stats._sum_outer is None else stats._sum_outer
        )
        num = torch.tensor([stats.num], dtype=torch.float64)
        parts = [t.to(dev) for t in (total, outer, num)]
        for t in parts:
            torch.distributed.all_reduce(t)
        merged = FeatureStats()
        merged._sum, merged._sum_outer = parts[0].cpu(), parts[1].cpu()
        merged.num = int(parts[2].item())
        return merged

    def describe(self) -> dict[str, Any]:
        """The settings a result depends on, as stored beside each FID."""
        return {
            "num_images": len(self.seeds),
            "seeds": format_seeds(self.seeds),
            "ref": str(self.ref),
            "detector": str(self.detector_path),
        }


# ---------------------------------------------------------------------------------------------
# Checkpoints of a run.


def select_checkpoints(run_dir: str | Path, spec: str | int = "all") -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints ``spec`` names: 'all', 'latest' or a comma list of steps."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run directory at {run_dir}")
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir} holds no checkpoint (checkpoints/ckpt-XXXXXXXX.pt)")
    spec = str(spec).replace(" ", "")
    if spec == "all":
        return found
    if spec == "latest":
        return found[-1:]
    by_step = dict(found)
    picked = []
    for item in spec.split(","):
        if not item.isdigit():
            raise UserError(f"--ckpt expects 'all', 'latest' or steps like 1000,2000, got {spec!r}")
        if int(item) not in by_step:
            have = ", ".join(str(s) for s, _ in found)
            raise UserError(f"{run_dir} has no checkpoint of step {item}; it has {have}")
        picked.append((int(item), by_step[int(item)]))
    return picked


def evaluate_students(
    students: dict[str, TrajectoryModel], system: ODESystem, scorer: FIDScorer, step: int = 0
) -> dict[str, float]:
    """FID of each named student's one-step samples (models in training mode are put back)."""
    return {
        name: scorer.score(StudentSampler(model, system), f"FID step {step} {name}")
        for name, model in students.items()
    }


def _evaluate_state(
    state: dict[str, Any], path: Path, session: Session, names: list[str], scorer: FIDScorer
) -> list[dict[str, Any]]:
    step = int(state.get("step", 0))
    fids: dict[str, float] = {}
    for name in names:
        model = load_weights(session.model, state, name)
        fids.update(evaluate_students({name: model}, session.system, scorer, step))
    return _records(fids, scorer, step, path)


def _records(
    fids: dict[str, float], scorer: FIDScorer, step: int, checkpoint: Path
) -> list[dict[str, Any]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return [
        {
            "step": step,
            "weights": name,
            "fid": fid,
            **scorer.describe(),
            "checkpoint": checkpoint.name,
            "time": now,
        }
        for name, fid in fids.items()
    ]


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """The results in a run's fid.json (none if it has none)."""
    path = Path(run_dir) / FID_JSON
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        results = data["results"]
        if not isinstance(results, list):
            raise TypeError
        return results
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a readable {FID_JSON}; move it away and rerun") from e


def _key(r: dict[str, Any]) -> tuple:
    return (r["step"], r["weights"], r["seeds"], r["ref"], r["detector"])


def record_results(run_dir: str | Path, records: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Merge ``records`` into the run's fid.json and fid.csv (a newer result replaces an older
    one of the same step, weights, seeds, reference and detector); both written atomically."""
    run_dir = Path(run_dir)
    merged = {_key(r): r for r in read_results(run_dir)}
    merged.update({_key(r): r for r in records})
    results = sorted(merged.values(), key=lambda r: (r["step"], r["weights"], r["seeds"]))
    json_path = atomic_write_json(run_dir / FID_JSON, {"format": FORMAT, "results": results})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({**r, "fid": repr(float(r["fid"]))})
    csv_path = atomic_write_text(run_dir / FID_CSV, buf.getvalue())
    return json_path, csv_path


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
    """FID of the weights ``weights`` names in one checkpoint; appended to fid.json and fid.csv.

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
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        state = read_checkpoint(path, dev)
        names = weight_names(state, weights)
        session = session_of(state, dev, str(path))
        scorer.check(StudentSampler(session.model, session.system))
        records = _evaluate_state(state, path, session, names, scorer)
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
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if seeds is None:
        seeds = default_seeds(50000 if num is None else num)
    elif num is not None and num != len(seeds):
        raise UserError(f"--num {num} disagrees with --seeds, which name {len(seeds)} images")
    checkpoints = select_checkpoints(run_dir, ckpt)
    read_results(run_dir)  # an unreadable fid.json is an error now, not after sampling
    scorer = FIDScorer(ref, detector, seeds, batch=batch, device=dev, progress=progress, dist=dist)
    records: list[dict[str, Any]] = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        state = read_checkpoint(checkpoints[0][1], dev)
        names = weight_names(state, weights)
        session = session_of(state, dev, str(checkpoints[0][1]))
        scorer.check(StudentSampler(session.model, session.system))  # all checked: now sample
        for k, (_, path) in enumerate(checkpoints):
            if k > 0:
                state = read_checkpoint(path, dev)
                names = weight_names(state, weights)
            new = _evaluate_state(state, path, session, names, scorer)
            if dist.is_main:
                record_results(run_dir, new)
            records += new
    return records


def best(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record with the lowest finite FID."""
    finite = [r for r in records if np.isfinite(r["fid"])]
    return min(finite, key=lambda r: r["fid"]) if finite else None
