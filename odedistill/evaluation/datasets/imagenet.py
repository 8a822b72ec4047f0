"""Downsampled ImageNet (Chrabaszcz et al. 2017): train_data_batch_1..10 and val_data, pickles or .npz."""

from __future__ import annotations

import math
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import numpy as np

from odedistill.errors import UserError
from odedistill.evaluation.datasets.base import (
    ArrayDataset,
    Batch,
    ImageDataset,
    check_batch_size,
    decode_plane_batch,
    sorted_unique,
)
from odedistill.evaluation.datasets.npz import load_npz, npz_rows
from odedistill.evaluation.datasets.unpickle import restricted_load

IMAGENET_FILE: Final = re.compile(r"^(train_data_batch_(\d+)|val_data)(\.npz)?$")


def is_downsampled_imagenet_name(name: str) -> bool:
    return IMAGENET_FILE.match(name) is not None


class DownsampledImageNet(ImageDataset):
    """Downsampled ImageNet batch files (pickles or ``.npz``), read one file at a time.

    Each file holds ``data`` uint8 (N, 3·s²) in R, G, B planes (s = 64 for ImageNet 64×64) and
    ``labels`` 1 … 1000. Labels are yielded as ``labels − 1`` (0 … 999) in this dataset's
    class order, which differs from the order of EDM's ImageNet zip.
    """

    def __init__(self, files: Sequence[Path], name: str = "imagenet-downsampled") -> None:
        if not files:
            raise ValueError("no files")
        self.files = list(files)
        self.name = name
        self._counts: dict[Path, int] = {}

    def _load(self, file: Path) -> tuple[np.ndarray, np.ndarray]:
        if zipfile.is_zipfile(file):
            batch = load_npz(file)
        else:
            with open(file, "rb") as f:
                batch = restricted_load(f, str(file))
        data = batch.get("data") if isinstance(batch, dict) else None
        size = 64  # the side s of the images, from data's 3·s² columns
        if isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] >= 3:
            size = math.isqrt(data.shape[1] // 3)
        images, labels = decode_plane_batch(batch, str(file), size, label_offset=1)
        self._counts[file] = len(images)
        return images, labels

    @property
    def num_images(self) -> int | None:
        total = 0
        for file in self.files:
            count = self._counts.get(file)
            if count is None and zipfile.is_zipfile(file):
                count = npz_rows(file, "data")
            if count is None:
                return None
            total += count
        return total

    def batches(
        self, batch_size: int = 64, indices: Sequence[int] | None = None
    ) -> Iterator[Batch]:
        check_batch_size(batch_size)
        idx = sorted_unique(indices, None)
        if idx is not None and idx.size == 0:
            return
        offset = 0
        for file in self.files:
            if idx is not None and offset > idx[-1]:
                break
            images, labels = self._load(file)
            local = None
            if idx is not None:
                lo, hi = np.searchsorted(idx, [offset, offset + len(images)])
                local = idx[lo:hi] - offset
            yield from ArrayDataset(images, labels).batches(batch_size, local)
            offset += len(images)
        if idx is not None and idx.size and idx[-1] >= offset:
            raise UserError(f"index {idx[-1]} is past the {offset} images of {self.name}")


def open_downsampled_imagenet(
    path: str | os.PathLike[str], split: str = "train"
) -> DownsampledImageNet:
    """A folder of ``train_data_batch_N`` / ``val_data`` files (pickle or .npz), or one file."""
    path = Path(path)
    if path.is_file():
        return DownsampledImageNet([path], name=path.stem)
    want = {"train": "train_data_batch_", "val": "val_data", "all": ""}.get(split)
    if want is None:
        raise UserError(f"unknown ImageNet split {split!r}; use train, val or all")
    files = []
    for f in path.iterdir():
        m = IMAGENET_FILE.match(f.name)
        if m and f.is_file() and f.name.startswith(want):
            number = int(m.group(2)) if m.group(2) else 1 << 30  # val_data after the train batches
            files.append((number, f.name, f))
    if not files:
        raise UserError(f"{path} has no downsampled ImageNet {split} files (train_data_batch_N)")
    files.sort()
    return DownsampledImageNet([f for _, _, f in files], name=f"imagenet-{split}")
