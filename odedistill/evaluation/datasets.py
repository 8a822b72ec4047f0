"""Image datasets read as uint8 NCHW batches for FID reference statistics (EDM's fid.py inputs)."""

from __future__ import annotations

import _codecs
import abc
import builtins
import io
import json
import math
import os
import pickle
import re
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import PIL.Image
import torch

from odedistill.errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor | None]
"""``(images, labels)``: images uint8 (B, C, H, W); labels int64 (B,), float32 (B, L) or None."""

IMAGE_EXTENSIONS: Final = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

SUPPORTED_SOURCES: Final = (
    "a CIFAR-10 python batches folder or cifar-10-python.tar.gz, an EDM dataset .zip, "
    "a folder of images, an .npz of uint8 images, or downsampled ImageNet train_data_batch_N files"
)


# ---------------------------------------------------------------------------------------------
# Restricted unpickling: numpy arrays and plain containers, nothing else.


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    found: dict[tuple[str, str], Any] = {}
    for package in ("numpy.core", "numpy._core"):
        found[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        found[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            found[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    found[("numpy", "ndarray")] = np.ndarray
    found[("numpy", "dtype")] = np.dtype
    # Python 3 writes ``bytes`` as ``_codecs.encode(str, 'latin1')`` under protocol 2.
    found[("_codecs", "encode")] = _codecs.encode
    for module in ("builtins", "__builtin__"):
        for name in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "bytes"):
            found[(module, name)] = getattr(builtins, name)
    return found


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dtypes, scalars and builtin containers; refuses any other global."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _numpy_globals()
        found = _RestrictedUnpickler._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return found


def restricted_load(file: IO[bytes], where: str) -> Any:
    """Unpickle a data file that may hold only numpy arrays and builtin containers.

    Python 2 pickles (the CIFAR-10 batches) are read with ``encoding='latin1'``. Any other
    global, such as a function or class that could run code, makes this raise ``UserError``.
    """
    try:
        return _RestrictedUnpickler(file, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{where} is not a plain data pickle ({e}); only files holding numpy arrays, "
            "lists and dicts are read"
        ) from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise UserError(f"{where} is not a readable pickle ({e}); download it again") from e


# ---------------------------------------------------------------------------------------------
# The dataset interface.


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


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")


def _sorted_unique(indices: Sequence[int] | None, n: int | None) -> np.ndarray | None:
    if indices is None:
        return None
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or (idx.size > 1 and np.any(np.diff(idx) <= 0)):
        raise ValueError("indices must be a strictly increasing 1-D sequence")
    if idx.size and (idx[0] < 0 or (n is not None and idx[-1] >= n)):
        raise ValueError(f"indices out of range for {n} images")
    return idx


def _labels_tensor(labels: np.ndarray | None) -> torch.Tensor | None:
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
        _check_batch_size(batch_size)
        idx = _sorted_unique(indices, len(self.images))
        order = np.arange(len(self.images)) if idx is None else idx
        for start in range(0, len(order), batch_size):
            sel = order[start : start + batch_size]
            if idx is None:
                sel = slice(int(sel[0]), int(sel[-1]) + 1)
            images = torch.from_numpy(np.ascontiguousarray(self.images[sel]))
            labels = None if self.labels is None else _labels_tensor(self.labels[sel])
            yield images, labels


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python batches.

_CIFAR_TRAIN: Final = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST: Final = ("test_batch",)


def _cifar_batch_names(split: str) -> tuple[str, ...]:
    if split == "train":
        return _CIFAR_TRAIN
    if split == "test":
        return _CIFAR_TEST
    if split == "all":
        return _CIFAR_TRAIN + _CIFAR_TEST
    raise UserError(f"unknown CIFAR-10 split {split!r}; use train (EDM's reference), test or all")


def _decode_plane_batch(
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
    parts = [_decode_plane_batch(found[n], f"{path}:{n}", 32) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArrayDataset(images, labels, name=f"cifar10-{split}")


# ---------------------------------------------------------------------------------------------
# Downsampled ImageNet (Chrabaszcz et al. 2017): train_data_batch_1..10 and val_data.

_IMAGENET_FILE: Final = re.compile(r"^(train_data_batch_(\d+)|val_data)(\.npz)?$")


def _is_downsampled_imagenet_name(name: str) -> bool:
    return _IMAGENET_FILE.match(name) is not None


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
            batch = _load_npz(file)
        else:
            with open(file, "rb") as f:
                batch = restricted_load(f, str(file))
        data = batch.get("data") if isinstance(batch, dict) else None
        size = 64  # the side s of the images, from data's 3·s² columns
        if isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] >= 3:
            size = math.isqrt(data.shape[1] // 3)
        images, labels = _decode_plane_batch(batch, str(file), size, label_offset=1)
        self._counts[file] = len(images)
        return images, labels

    @property
    def num_images(self) -> int | None:
        total = 0
        for file in self.files:
            count = self._counts.get(file)
            if count is None and zipfile.is_zipfile(file):
                count = _npz_rows(file, "data")
            if count is None:
                return None
            total += count
        return total

    def batches(
        self, batch_size: int = 64, indices: Sequence[int] | None = None
    ) -> Iterator[Batch]:
        _check_batch_size(batch_size)
        idx = _sorted_unique(indices, None)
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
        m = _IMAGENET_FILE.match(f.name)
        if m and f.is_file() and f.name.startswith(want):
            number = int(m.group(2)) if m.group(2) else 1 << 30  # val_data after the train batches
            files.append((number, f.name, f))
    if not files:
        raise UserError(f"{path} has no downsampled ImageNet {split} files (train_data_batch_N)")
    files.sort()
    return DownsampledImageNet([f for _, _, f in files], name=f"imagenet-{split}")


# ---------------------------------------------------------------------------------------------
# .npz files.


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path} is not a readable .npz of plain arrays ({e})") from e


def _npz_rows(path: Path, key: str) -> int | None:
    """Rows of array ``key`` in an .npz, read from its header only."""
    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
            return int(shape[0])
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, AttributeError):
        return None


def images_to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    """A uint8 (N, H, W, C), (N, C, H, W) or (N, H, W) array as (N, C, H, W), C in {1, 3}.

    When both readings are possible (H or W of 1 or 3), the NHWC reading wins, as in the
    ``arr_0`` files of openai/guided-diffusion.
    """
    if images.dtype != np.uint8:
        raise UserError(
            f"{where} holds {images.dtype} images; save uint8 pixels, "
            "clip(x * 127.5 + 128, 0, 255) for images x in [-1, 1]"
        )
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[3] in (1, 3):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    raise UserError(
        f"{where} holds images of shape {images.shape}; expected NHWC or NCHW with 1 or 3 channels"
    )


def open_npz(path: str | os.PathLike[str]) -> ImageDataset:
    """An .npz of uint8 images under ``images`` or ``arr_0`` (optional ``labels``), or a
    downsampled ImageNet ``.npz`` batch (``data`` and ``labels``)."""
    path = Path(path)
    arrays = _load_npz(path)
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


# ---------------------------------------------------------------------------------------------
# Image files in a folder or an EDM dataset zip.


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
        _check_batch_size(batch_size)
        idx = _sorted_unique(indices, len(self.fnames))
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
                labels = None if self.labels is None else _labels_tensor(self.labels[sel])
                yield torch.from_numpy(np.stack(images)), labels
        finally:
            if z is not None:
                z.close()


def _shape(chw: Sequence[int]) -> str:
    c, h, w = chw
    return f"{w}x{h} with {c} channel{'s' if c != 1 else ''}"


# ---------------------------------------------------------------------------------------------
# One entry point.


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
        cifar_names = set(_CIFAR_TRAIN + _CIFAR_TEST)
        if "cifar-10-batches-py" in names or names & cifar_names:
            return open_cifar10(path, split)
        if any(_is_downsampled_imagenet_name(n) for n in names):
            return open_downsampled_imagenet(path, split)
        return ImageFiles(path)
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return open_cifar10(path, split)
    if name.endswith(".zip"):
        return ImageFiles(path)
    if name.endswith(".npz") and not _is_downsampled_imagenet_name(path.name):
        return open_npz(path)
    if _is_downsampled_imagenet_name(path.name):
        return open_downsampled_imagenet(path)
    if path.name in _CIFAR_TRAIN + _CIFAR_TEST:
        with open(path, "rb") as f:
            images, labels = _decode_plane_batch(restricted_load(f, str(path)), str(path), 32)
        return ArrayDataset(images, labels, name=path.name)
    if os.path.splitext(name)[1] in IMAGE_EXTENSIONS:
        raise UserError(f"{path} is a single image; give the folder that holds the images")
    raise UserError(f"cannot tell what {path} is; give {SUPPORTED_SOURCES}")
