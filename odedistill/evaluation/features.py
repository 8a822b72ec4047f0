"""Inception features of image batches, datasets and samplers, and the FID of a sampler on fixed seeds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from odedistill.errors import UserError
from odedistill.evaluation.datasets import ImageDataset
from odedistill.evaluation.fid import (
    FeatureStats,
    detector_features,
    fid_from_stats,
    load_detector,
    load_ref,
)
from odedistill.infra.distributed import DistEnv
from odedistill.infra.pictures import to_uint8
from odedistill.infra.progress import progress_bar
from odedistill.infra.seeds import SeedSampler, format_seeds, generate, shard_seeds


def default_seeds(num: int) -> list[int]:
    """EDM's protocol seeds for ``num`` images: 0 … num − 1."""
    if num < 2:
        raise UserError(f"--num must be at least 2 to compute statistics, got {num}")
    return list(range(num))


def check_detector(
    detector: torch.nn.Module,
    image_shape: Sequence[int],
    ref_dim: int,
    detector_path: str | Path = "the detector",
    ref_path: str | Path = "the reference",
) -> int:
    """The detector's feature size on images of ``image_shape``, which must be the reference's.

    Probed on two blank images before any real work, so that a mismatch is found at once.
    """
    probe = torch.zeros((2, *image_shape), dtype=torch.uint8)
    dim = detector_features(detector, probe).shape[1]
    if dim != ref_dim:
        raise UserError(
            f"the detector {detector_path} gives {dim} features but {ref_path} holds "
            f"statistics of {ref_dim}; compute both with the same detector"
        )
    return dim


def compute_feature_stats(
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, object]],
    detector: torch.nn.Module,
    *,
    batch_size: int = 64,
    total: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    description: str = "Inception features",
) -> FeatureStats:
    """Stream uint8 NCHW image batches through the detector and accumulate feature statistics.

    Args:
        batches: uint8 (B, C, H, W) tensors, or ``(images, labels)`` pairs (labels ignored).
        detector: from :func:`load_detector`, or any module with the same call.
        batch_size: the largest batch given to the detector; larger batches are split.
        total: the number of images, for the progress bar (None: unknown).
        device: where the detector runs (default: where its parameters are).
        progress: show a rich progress bar on stderr.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    stats = FeatureStats()
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=total)
        for batch in batches:
            images = batch[0] if isinstance(batch, tuple | list) else batch
            for chunk in torch.split(images, batch_size):
                if chunk.shape[0] == 0:
                    continue
                stats.update(detector_features(detector, chunk, device))
                bar.advance(task, chunk.shape[0])
    return stats


def dataset_feature_stats(
    dataset: ImageDataset,
    detector: torch.nn.Module,
    *,
    batch_size: int = 64,
    indices: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> FeatureStats:
    """Feature statistics of a dataset's images (of ``indices`` only, when given)."""
    total = len(indices) if indices is not None else dataset.num_images
    return compute_feature_stats(
        dataset.batches(batch_size, indices),
        detector,
        batch_size=batch_size,
        total=total,
        device=device,
        progress=progress,
        description=f"Inception features of {dataset.name}" if dataset.name else "Inception",
    )


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
        self.feature_dim = check_detector(
            self.detector, sampler.state_shape, self.mu_ref.shape[0], self.detector_path, self.ref
        )

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
