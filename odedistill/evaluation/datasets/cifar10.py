"""CIFAR-10 python batches (data_batch_1..5, test_batch), read with the allow-list unpickler."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any, Final

import numpy as np

from odedistill.errors import UserError
from odedistill.evaluation.datasets.base import ArrayDataset, decode_plane_batch
from odedistill.evaluation.datasets.unpickle import restricted_load

CIFAR_TRAIN: Final = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST: Final = ("test_batch",)


def _cifar_batch_names(split: str) -> tuple[str, ...]:
    if split == "train":
        return CIFAR_TRAIN
    if split == "test":
        return CIFAR_TEST
    if split == "all":
        return CIFAR_TRAIN + CIFAR_TEST
    raise UserError(f"unknown CIFAR-10 split {split!r}; use train (EDM's reference), test or all")


def open_cifar10(path: str | os.PathLike[str], split: str = "train") -> ArrayDataset:
    """CIFAR-10 python batches from a folder or ``cifar-10-python.tar.gz``.

    ``split='train'`` reads ``data_batch_1..5`` (the 50,000 images of EDM's
    ``cifar10-32x32.npz``), ``'test'`` reads ``test_batch``, ``'all'`` reads both.
    """
    path = Path(path)
    names = _cifar_batch_names(split)
    found: dict[str, Any] = {}
    if path.is_dir():
        base = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        for name in names:
            if (base / name).is_file():
                with open(base / name, "rb") as f:
                    found[name] = restricted_load(f, str(base / name))
    else:
        try:
            tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"{path} is not a readable tar archive ({e}); download it again") from e
        with tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in names and name not in found:
                    file = tar.extractfile(member)
                    assert file is not None
                    with file:
                        found[name] = restricted_load(file, f"{path}:{member.name}")
    missing = [n for n in names if n not in found]
    if missing:
        raise UserError(
            f"{path} lacks CIFAR-10 batch {', '.join(missing)}; point at the folder "
            "cifar-10-batches-py or at cifar-10-python.tar.gz "
            "(www.cs.toronto.edu/~kriz/cifar.html)"
        )
    parts = [decode_plane_batch(found[n], f"{path}:{n}", 32) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArrayDataset(images, labels, name=f"cifar10-{split}")
