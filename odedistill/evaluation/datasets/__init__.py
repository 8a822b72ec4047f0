"""Image datasets read as uint8 NCHW batches for FID reference statistics: one module per format.

CIFAR-10 python batches and downsampled ImageNet pickles are read by the allow-list
unpickler of :mod:`odedistill.safe_pickle`: numpy arrays and plain containers only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from odedistill.errors import UserError
from odedistill.evaluation.datasets.base import (
    ArrayDataset,
    Batch,
    ImageDataset,
    decode_plane_batch,
    subset_indices,
)
from odedistill.evaluation.datasets.cifar10 import CIFAR_TEST, CIFAR_TRAIN, open_cifar10
from odedistill.evaluation.datasets.files import IMAGE_EXTENSIONS, ImageFiles
from odedistill.evaluation.datasets.imagenet import (
    DownsampledImageNet,
    is_downsampled_imagenet_name,
    open_downsampled_imagenet,
)
from odedistill.evaluation.datasets.npz import images_to_nchw, load_npz
from odedistill.evaluation.datasets.unpickle import restricted_load

SUPPORTED_SOURCES: Final = (
    "a CIFAR-10 python batches folder or cifar-10-python.tar.gz, an EDM dataset .zip, "
    "a folder of images, an .npz of uint8 images, or downsampled ImageNet train_data_batch_N files"
)


def open_npz(path: str | os.PathLike[str]) -> ImageDataset:
    """An .npz of uint8 images under ``images`` or ``arr_0`` (optional ``labels``), or a
    downsampled ImageNet ``.npz`` batch (``data`` and ``labels``)."""
    path = Path(path)
    arrays = load_npz(path)
    if "data" in arrays and "labels" in arrays and "images" not in arrays:
        return DownsampledImageNet([path], name=path.stem)
    key = "images" if "images" in arrays else "arr_0" if "arr_0" in arrays else None
    if key is None:
        raise UserError(f"{path} has no 'images' or 'arr_0' array (found {sorted(arrays)})")
    images = images_to_nchw(arrays[key], str(path))
    labels = arrays.get("labels")
    if labels is None and key == "arr_0" and "arr_1" in arrays:
        labels = arrays["arr_1"]  # guided-diffusion stores class labels as arr_1
    if labels is not None and (labels.ndim not in (1, 2) or len(labels) != len(images)):
        raise UserError(f"{path}: 'labels' has shape {labels.shape} for {len(images)} images")
    if len(images) == 0:
        raise UserError(f"{path} holds no images")
    return ArrayDataset(images, labels, name=path.stem)


def open_dataset(path: str | os.PathLike[str], split: str = "train") -> ImageDataset:
    """Open any supported image source by looking at what ``path`` is.

    - a folder with ``data_batch_1`` … / ``test_batch`` (or a ``cifar-10-batches-py`` inside),
      a ``.tar.gz`` / ``.tgz``, or a single CIFAR-10 batch file: CIFAR-10 (``split``: train,
      test, all);
    - a folder with ``train_data_batch_N`` / ``val_data`` files, or one such file:
      downsampled ImageNet (``split``: train, val, all);
    - a ``.zip``: EDM's dataset zip (PNGs and optional ``dataset.json``);
    - an ``.npz``: uint8 images under ``images`` or ``arr_0`` (NHWC or NCHW);
    - any other folder: image files found recursively.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; give {SUPPORTED_SOURCES}")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        cifar_names = set(CIFAR_TRAIN + CIFAR_TEST)
        if "cifar-10-batches-py" in names or names & cifar_names:
            return open_cifar10(path, split)
        if any(is_downsampled_imagenet_name(n) for n in names):
            return open_downsampled_imagenet(path, split)
        return ImageFiles(path)
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return open_cifar10(path, split)
    if name.endswith(".zip"):
        return ImageFiles(path)
    if name.endswith(".npz") and not is_downsampled_imagenet_name(path.name):
        return open_npz(path)
    if is_downsampled_imagenet_name(path.name):
        return open_downsampled_imagenet(path)
    if path.name in CIFAR_TRAIN + CIFAR_TEST:
        with open(path, "rb") as f:
            images, labels = decode_plane_batch(restricted_load(f, str(path)), str(path), 32)
        return ArrayDataset(images, labels, name=path.name)
    if os.path.splitext(name)[1] in IMAGE_EXTENSIONS:
        raise UserError(f"{path} is a single image; give the folder that holds the images")
    raise UserError(f"cannot tell what {path} is; give {SUPPORTED_SOURCES}")


__all__ = [
    "IMAGE_EXTENSIONS",
    "SUPPORTED_SOURCES",
    "ArrayDataset",
    "Batch",
    "DownsampledImageNet",
    "ImageDataset",
    "ImageFiles",
    "images_to_nchw",
    "open_cifar10",
    "open_dataset",
    "open_downsampled_imagenet",
    "open_npz",
    "restricted_load",
    "subset_indices",
]
