"""Image files found recursively in a folder or an EDM dataset zip (PNGs plus an optional dataset.json)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final

import numpy as np
import PIL.Image
import torch

from odedistill.errors import UserError
from odedistill.evaluation.datasets.base import (
    Batch,
    ImageDataset,
    check_batch_size,
    labels_tensor,
    sorted_unique,
)

IMAGE_EXTENSIONS: Final = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

SUPPORTED_SOURCES: Final = (
    "a CIFAR-10 python batches folder or cifar-10-python.tar.gz, an EDM dataset .zip, "
    "a folder of images, an .npz of uint8 images, or downsampled ImageNet train_data_batch_N files"
)


def _decode_image(data: IO[bytes], where: str) -> np.ndarray:
    """One image file as uint8 CHW: 8-bit grey stays one channel, colour becomes RGB."""
    try:
        with PIL.Image.open(data) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                raise UserError(f"{where} has an alpha channel; save images as RGB or grey")
            if img.mode in ("1", "L"):
                img = img.convert("L")
            elif img.mode != "RGB":
                if img.mode.startswith("I") or img.mode == "F":
                    raise UserError(f"{where} is a {img.mode} image; save 8-bit RGB or grey images")
                img = img.convert("RGB")
            array = np.asarray(img, dtype=np.uint8)
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UserError(f"{where} is not a readable image ({e})") from e
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _parse_labels(text: bytes, where: str, fnames: Sequence[str]) -> np.ndarray | None:
    try:
        labels = json.loads(text)["labels"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{where} is not an EDM dataset.json with 'labels' ({e})") from e
    if labels is None:
        return None
    try:
        table = {str(k): v for k, v in labels}
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: 'labels' must be a list of [file name, label] pairs") from e
    missing = [f for f in fnames if f not in table]
    if missing:
        raise UserError(f"{where} has no label for {missing[0]} ({len(missing)} missing)")
    values = np.array([table[f] for f in fnames])
    if values.ndim == 1 and values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.ndim == 2 and values.dtype.kind in "iuf":
        return values.astype(np.float32)
    raise UserError(f"{where}: labels must be integers or equal-length lists of numbers")


class ImageFiles(ImageDataset):
    """Image files found recursively in a folder or an EDM dataset zip, in sorted path order.

    Labels come from ``dataset.json`` at the root when present (EDM's format:
    ``{"labels": [["00000/img00000000.png", 6], ...]}``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self.is_zip = self.path.is_file()
        if self.is_zip:
            try:
                with zipfile.ZipFile(self.path) as z:
                    names = [n for n in z.namelist() if not n.endswith("/")]
                    label_text = z.read("dataset.json") if "dataset.json" in names else None
            except (zipfile.BadZipFile, OSError) as e:
                raise UserError(f"{self.path} is not a readable zip ({e})") from e
        else:
            names = [
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            ]
            json_path = self.path / "dataset.json"
            label_text = json_path.read_bytes() if json_path.is_file() else None
        self.fnames = sorted(n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
        if not self.fnames:
            raise UserError(
                f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {self.path}"
            )
        where = f"{self.path}/dataset.json"
        self.labels = None if label_text is None else _parse_labels(label_text, where, self.fnames)
        self.image_shape = tuple(self._read_one(None, self.fnames[0]).shape)

    @property
    def num_images(self) -> int:
        return len(self.fnames)

    def _read_one(self, z: zipfile.ZipFile | None, fname: str) -> np.ndarray:
        where = f"{self.path}/{fname}"
        if z is not None:
            with z.open(fname) as f:
                return _decode_image(io.BytesIO(f.read()), where)
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zz:
                return self._read_one(zz, fname)
        with open(self.path / fname, "rb") as f:
            return _decode_image(f, where)

    def batches(
        self, batch_size: int = 64, indices: Sequence[int] | None = None
    ) -> Iterator[Batch]:
        check_batch_size(batch_size)
        idx = sorted_unique(indices, len(self.fnames))
        order = np.arange(len(self.fnames)) if idx is None else idx
        z = zipfile.ZipFile(self.path) if self.is_zip else None
        try:
            for start in range(0, len(order), batch_size):
                sel = order[start : start + batch_size]
                images = []
                for i in sel:
                    image = self._read_one(z, self.fnames[i])
                    if image.shape != self.image_shape:
                        raise UserError(
                            f"{self.path}/{self.fnames[i]} is {_shape(image.shape)} but "
                            f"{self.fnames[0]} is {_shape(self.image_shape)}; all images must match"
                        )
                    images.append(image)
                labels = None if self.labels is None else labels_tensor(self.labels[sel])
                yield torch.from_numpy(np.stack(images)), labels
        finally:
            if z is not None:
                z.close()


def _shape(chw: Sequence[int]) -> str:
    c, h, w = chw
    return f"{w}x{h} with {c} channel{'s' if c != 1 else ''}"
