"""The dataset interface: a fixed, ordered set of uint8 CHW images read in batches (EDM's fid.py inputs)."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from odedistill.errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor | None]
"""``(images, labels)``: images uint8 (B, C, H, W); labels int64 (B,), float32 (B, L) or None."""


class ImageDataset(abc.ABC):
    """A fixed, ordered set of uint8 CHW images of one shape, with optional labels."""

    name: str

    @property
    @abc.abstractmethod
    def num_images(self) -> int | None:
        """The number of images, or None when counting would mean reading every file."""

    @abc.abstractmethod
    def batches(
        self, batch_size: int = 64, indices: Sequence[int] | None = None
    ) -> Iterator[Batch]:
        """Yield ``(images, labels)`` batches of at most ``batch_size`` images, in order.

        Args:
            batch_size: the largest batch yielded.
            indices: increasing image indices to read (all images when None).
        """


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")


def sorted_unique(indices: Sequence[int] | None, n: int | None) -> np.ndarray | None:
    if indices is None:
        return None
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or (idx.size > 1 and np.any(np.diff(idx) <= 0)):
        raise ValueError("indices must be a strictly increasing 1-D sequence")
    if idx.size and (idx[0] < 0 or (n is not None and idx[-1] >= n)):
        raise ValueError(f"indices out of range for {n} images")
    return idx


def labels_tensor(labels: np.ndarray | None) -> torch.Tensor | None:
    if labels is None:
        return None
    if labels.dtype.kind in "iu":
        return torch.from_numpy(labels.astype(np.int64))
    return torch.from_numpy(labels.astype(np.float32))


def subset_indices(num_total: int, num: int | None, seed: int = 0) -> np.ndarray | None:
    """Which images EDM's fid.py uses when asked for ``num`` of ``num_total``.

    With more images than ``num``, a ``np.random.RandomState(seed % 2**31)`` shuffle of
    ``0 … num_total−1`` picks the first ``num``, then they are sorted; with exactly ``num``
    (or ``num`` None) all are used (returns None); with fewer this raises ``UserError``.
    """
    if num is None or num_total == num:
        return None
    if num < 2:
        raise UserError(f"--num must be at least 2 to compute statistics, got {num}")
    if num_total < num:
        raise UserError(f"found {num_total} images, but --num asks for {num}; add images")
    idx = np.arange(num_total, dtype=np.int64)
    np.random.RandomState(seed % (1 << 31)).shuffle(idx)
    return np.sort(idx[:num])


class ArrayDataset(ImageDataset):
    """Images held in memory as one uint8 (N, C, H, W) array."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray | None = None, name: str = ""
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 NCHW, got {images.dtype} {images.shape}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images = images
        self.labels = labels
        self.name = name

    @property
    def num_images(self) -> int:
        return len(self.images)

    def batches(
        self, batch_size: int = 64, indices: Sequence[int] | None = None
    ) -> Iterator[Batch]:
        check_batch_size(batch_size)
        idx = sorted_unique(indices, len(self.images))
        order = np.arange(len(self.images)) if idx is None else idx
        for start in range(0, len(order), batch_size):
            sel = order[start : start + batch_size]
            if idx is None:
                sel = slice(int(sel[0]), int(sel[-1]) + 1)
            images = torch.from_numpy(np.ascontiguousarray(self.images[sel]))
            labels = None if self.labels is None else labels_tensor(self.labels[sel])
            yield images, labels


def decode_plane_batch(
    batch: Any, where: str, size: int, label_offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (N, 3·size²) uint8 in R, G, B planes plus ``labels`` → NCHW images, labels."""
    if isinstance(batch, dict):  # keys are bytes when a Python 2 pickle was read as bytes
        batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise UserError(f"{where} has no 'data' and 'labels' entries (found {keys}); not a batch")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * size * size:
        raise UserError(
            f"{where}: 'data' should be uint8 (N, {3 * size * size}), got {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        raise UserError(f"{where}: 'labels' should be {len(data)} integers, got {labels.shape}")
    images = data.reshape(len(data), 3, size, size)  # R, G, B planes, rows of ``size`` pixels
    return images, labels.astype(np.int64) - label_offset
