"""Dataset readers for FID references: each real file format, pixel values and channel order."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from odedistill.errors import UserError
from odedistill.evaluation.datasets import (
    ArrayDataset,
    DownsampledImageNet,
    ImageFiles,
    open_cifar10,
    open_dataset,
    restricted_load,
    subset_indices,
)


def _rgb(seed: int, n: int, size: int) -> np.ndarray:
    """Random uint8 NHWC RGB images: the layout the file formats start from."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _planes(nhwc: np.ndarray) -> np.ndarray:
    """Rows of R plane, G plane, B plane, each row-major: CIFAR-10 and ImageNet 64 ``data``."""
    n, h, w, _ = nhwc.shape
    rows = np.empty((n, 3 * h * w), np.uint8)
    for c in range(3):
        for y in range(h):
            for x in range(w):
                rows[:, c * h * w + y * w + x] = nhwc[:, y, x, c]
    return rows


def _collect(dataset, batch_size: int = 3, indices=None):
    images, labels = [], []
    for x, y in dataset.batches(batch_size, indices):
        assert x.dtype == torch.uint8 and x.ndim == 4 and len(x) <= batch_size
        images.append(x.numpy())
        labels.append(None if y is None else y.numpy())
    joined = None if labels[0] is None else np.concatenate(labels)
    return np.concatenate(images), joined


def _nchw(nhwc: np.ndarray) -> np.ndarray:
    return nhwc.transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# CIFAR-10.


def _py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch as Python 2 and NumPy 1 wrote it: protocol 2, byte strings, numpy.core."""

    def string(s: bytes) -> bytes:
        return b"U" + bytes([len(s)]) + s if len(s) < 256 else b"T" + struct.pack("<i", len(s)) + s

    def integer(i: int) -> bytes:
        return b"J" + struct.pack("<i", i)

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + b"K\x00\x85"
        + string(b"b")
        + b"\x87R"
        + b"(K\x01"
        + integer(data.shape[0])
        + integer(data.shape[1])
        + b"\x86"
        + b"cnumpy\ndtype\n"
        + string(b"u1")
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + string(b"|")
        + b"NNN"
        + integer(-1)
        + integer(-1)
        + b"K\x00tb"
        + b"\x89"
        + string(data.tobytes())
        + b"tb"
    )
    label_list = b"](" + b"".join(integer(v) for v in labels) + b"e"
    return (
        b"\x80\x02}("
        + string(b"batch_label")
        + string(b"training batch 1 of 5")
        + string(b"labels")
        + label_list
        + string(b"data")
        + array
        + string(b"filenames")
        + b"](" + string(b"x.png") + b"e"
        + b"u."
    )  # fmt: skip


def _cifar_batch(seed: int, n: int) -> tuple[np.ndarray, dict]:
    images = _rgb(seed, n, 32)
    labels = [int(v) for v in np.random.default_rng(seed).integers(0, 10, n)]
    batch = {
        "batch_label": f"batch {seed}",
        "labels": labels,
        "data": _planes(images),
        "filenames": [f"img{i}.png" for i in range(n)],
    }
    return images, batch


def _write_cifar(folder: Path, protocol: int | None = None, py2: bool = False) -> tuple:
    folder.mkdir(parents=True)
    all_images, all_labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images, batch = _cifar_batch(i, 3 + i % 2)
        with open(folder / name, "wb") as f:
            if py2:
                f.write(_py2_pickle(batch["data"], batch["labels"]))
            else:
                pickle.dump(batch, f, protocol=protocol)
        all_images.append(images)
        all_labels.append(np.array(batch["labels"]))
    return all_images, all_labels


def test_py2_pickle_helper_writes_what_pickle_reads():
    data = np.arange(24, dtype=np.uint8).reshape(2, 12)
    loaded = pickle.loads(_py2_pickle(data, [3, 7]), encoding="latin1")
    np.testing.assert_array_equal(loaded["data"], data)
    assert loaded["labels"] == [3, 7]


@pytest.mark.parametrize("protocol,py2", [(2, False), (4, False), (5, False), (2, True)])
def test_cifar10_folder_round_trips_pixels_channels_and_labels(tmp_path, protocol, py2):
    images, labels = _write_cifar(tmp_path / "cifar-10-batches-py", protocol, py2)
    train = open_dataset(tmp_path)  # finds cifar-10-batches-py inside
    assert train.num_images == sum(len(x) for x in images[:5])
    got, got_labels = _collect(train)
    expected = np.concatenate(images[:5])
    np.testing.assert_array_equal(got, _nchw(expected))
    np.testing.assert_array_equal(got_labels, np.concatenate(labels[:5]))
    # Channel order, pixel by pixel: channel 0 is red, the first plane of ``data``.
    assert got[0, 0, 0, 1] == expected[0, 0, 1, 0] and got[0, 2, 31, 0] == expected[0, 31, 0, 2]

    test, test_labels = _collect(open_cifar10(tmp_path / "cifar-10-batches-py", "test"))
    np.testing.assert_array_equal(test, _nchw(images[5]))
    np.testing.assert_array_equal(test_labels, labels[5])
    assert open_cifar10(tmp_path, "all").num_images == sum(len(x) for x in images)


def test_cifar10_tarball_is_read_like_the_folder(tmp_path):
    images, labels = _write_cifar(tmp_path / "cifar-10-batches-py")
    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    got, got_labels = _collect(open_dataset(tarball), batch_size=4)
    np.testing.assert_array_equal(got, _nchw(np.concatenate(images[:5])))
    np.testing.assert_array_equal(got_labels, np.concatenate(labels[:5]))


def test_cifar10_missing_batch_names_the_fix(tmp_path):
    _write_cifar(tmp_path / "c")
    os.remove(tmp_path / "c" / "data_batch_3")
    with pytest.raises(UserError, match="lacks CIFAR-10 batch data_batch_3"):
        open_dataset(tmp_path / "c")


def test_cifar10_batch_with_wrong_data_shape_is_refused(tmp_path):
    _write_cifar(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_2", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(UserError, match=r"uint8 \(N, 3072\)"):
        open_dataset(tmp_path / "c")


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.remove, (self.path,))


def test_unpickler_refuses_code_and_runs_none(tmp_path):
    _write_cifar(tmp_path / "c")
    canary = tmp_path / "canary"
    canary.write_text("still here")
    with open(tmp_path / "c" / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Evil(str(canary)), "labels": []}, f)
    with pytest.raises(UserError, match="not a plain data pickle.*remove"):
        open_dataset(tmp_path / "c")
    assert canary.read_text() == "still here"
    with pytest.raises(UserError, match="refusing"):
        restricted_load(io.BytesIO(pickle.dumps(ArrayDataset)), "x")


# ---------------------------------------------------------------------------------------------
# EDM's dataset zip and folders of images.


def _png_bytes(hwc: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(hwc if hwc.shape[-1] == 3 else hwc[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def test_edm_zip_round_trips_pixels_and_labels(tmp_path):
    images = _rgb(7, 7, 8)
    labels = [3, 1, 4, 1, 5, 9, 2]
    fnames = [f"{i // 4:05d}/img{i:08d}.png" for i in range(len(images))]
    path = tmp_path / "cifar10-32x32.zip"
    with zipfile.ZipFile(path, "w") as z:
        for fname, image in reversed(list(zip(fnames, images, strict=True))):  # stored unsorted
            z.writestr(fname, _png_bytes(image))
        pairs = [[f, label] for f, label in zip(fnames, labels, strict=True)]
        z.writestr("dataset.json", json.dumps({"labels": pairs}))
    dataset = open_dataset(path)
    assert isinstance(dataset, ImageFiles) and dataset.num_images == 7
    got, got_labels = _collect(dataset)
    np.testing.assert_array_equal(got, _nchw(images))
    np.testing.assert_array_equal(got_labels, labels)
    sub, sub_labels = _collect(dataset, 2, indices=[1, 5, 6])
    np.testing.assert_array_equal(sub, _nchw(images[[1, 5, 6]]))
    np.testing.assert_array_equal(sub_labels, [1, 9, 2])


def test_edm_zip_without_labels_and_with_null_labels(tmp_path):
    images = _rgb(8, 3, 4)
    for name, extra in (("plain.zip", None), ("null.zip", json.dumps({"labels": None}))):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            for i, image in enumerate(images):
                z.writestr(f"00000/img{i:08d}.png", _png_bytes(image))
            if extra is not None:
                z.writestr("dataset.json", extra)
        got, got_labels = _collect(open_dataset(tmp_path / name))
        np.testing.assert_array_equal(got, _nchw(images))
        assert got_labels is None


def test_image_folder_is_recursive_sorted_and_ignores_other_files(tmp_path):
    images = _rgb(9, 3, 5)
    for rel, image in zip(["b/y.png", "a/x.png", "c.png"], images, strict=True):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(image).save(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    got, labels = _collect(open_dataset(tmp_path))
    np.testing.assert_array_equal(got, _nchw(images[[1, 0, 2]]))  # a/x, b/y, c
    assert labels is None


def test_image_folder_of_grayscale_pngs_has_one_channel(tmp_path):
    grey = np.random.default_rng(10).integers(0, 256, size=(2, 6, 6), dtype=np.uint8)
    for i, image in enumerate(grey):
        PIL.Image.fromarray(image, mode="L").save(tmp_path / f"{i}.png")
    got, _ = _collect(open_dataset(tmp_path))
    np.testing.assert_array_equal(got, grey[:, None])


def test_image_folder_errors_name_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        open_dataset(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    PIL.Image.fromarray(_rgb(11, 1, 8)[0]).save(mixed / "a.png")
    PIL.Image.fromarray(_rgb(11, 1, 4)[0]).save(mixed / "b.png")
    with pytest.raises(UserError, match="b.png is 4x4.*all images must match"):
        _collect(open_dataset(mixed))
    alpha = tmp_path / "alpha"
    alpha.mkdir()
    PIL.Image.new("RGBA", (4, 4)).save(alpha / "a.png")
    with pytest.raises(UserError, match="alpha"):
        open_dataset(alpha)


def test_jpeg_folder_reads_as_pil_decodes_it(tmp_path):
    image = _rgb(12, 1, 16)[0]
    PIL.Image.fromarray(image).save(tmp_path / "a.jpg", quality=90)
    got, _ = _collect(open_dataset(tmp_path))
    decoded = np.asarray(PIL.Image.open(tmp_path / "a.jpg").convert("RGB"))
    np.testing.assert_array_equal(got[0], decoded.transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------------
# .npz of images.


def test_npz_of_nhwc_and_nchw_images(tmp_path):
    images = _rgb(13, 5, 6)
    np.savez(tmp_path / "adm.npz", arr_0=images, arr_1=np.arange(5))
    np.savez(tmp_path / "nchw.npz", images=_nchw(images))
    np.savez(tmp_path / "grey.npz", images=images[..., 0])
    for name in ("adm.npz", "nchw.npz"):
        got, _ = _collect(open_dataset(tmp_path / name))
        np.testing.assert_array_equal(got, _nchw(images))
    assert _collect(open_dataset(tmp_path / "adm.npz"))[1].tolist() == [0, 1, 2, 3, 4]
    got, _ = _collect(open_dataset(tmp_path / "grey.npz"))
    np.testing.assert_array_equal(got, images[:, None, :, :, 0])


def test_npz_errors_name_the_fix(tmp_path):
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(UserError, match=r"uint8.*127\.5"):
        open_dataset(tmp_path / "float.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(UserError, match="no 'images' or 'arr_0'"):
        open_dataset(tmp_path / "other.npz")
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 5, 4, 4), np.uint8))
    with pytest.raises(UserError, match="NHWC or NCHW"):
        open_dataset(tmp_path / "shape.npz")


# ---------------------------------------------------------------------------------------------
# Downsampled ImageNet 64×64.


def _imagenet_batch(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    images = _rgb(seed, n, 64)
    labels = np.random.default_rng(seed).integers(1, 1001, n)
    data = _planes(images)
    batch = {"data": data, "labels": [int(v) for v in labels], "mean": data.mean(0)}
    return images, labels, batch


def test_imagenet64_batch_files_in_numeric_order(tmp_path):
    expected_images, expected_labels = [], []
    for k in (1, 2, 10):  # 10 sorts before 2 as text
        images, labels, batch = _imagenet_batch(k, 2 + k % 3)
        with open(tmp_path / f"train_data_batch_{k}", "wb") as f:
            pickle.dump(batch, f)
        expected_images.append(images)
        expected_labels.append(labels)
    _, _, val = _imagenet_batch(99, 2)
    with open(tmp_path / "val_data", "wb") as f:
        pickle.dump(val, f)

    dataset = open_dataset(tmp_path)
    assert isinstance(dataset, DownsampledImageNet)
    assert [f.name for f in dataset.files] == [f"train_data_batch_{k}" for k in (1, 2, 10)]
    assert dataset.num_images is None  # pickles are counted only by reading them
    got, got_labels = _collect(dataset, batch_size=4)
    all_images = np.concatenate(expected_images)
    np.testing.assert_array_equal(got, _nchw(all_images))
    np.testing.assert_array_equal(got_labels, np.concatenate(expected_labels) - 1)  # 0 … 999
    assert dataset.num_images == len(all_images)
    sub, _ = _collect(dataset, 4, indices=[0, 3, len(all_images) - 1])
    np.testing.assert_array_equal(sub, _nchw(all_images[[0, 3, -1]]))

    val_images, _ = _collect(open_dataset(tmp_path, split="val"))
    assert val_images.shape == (2, 3, 64, 64)


def test_imagenet64_npz_batch(tmp_path):
    images, labels, batch = _imagenet_batch(5, 3)
    np.savez(tmp_path / "train_data_batch_1.npz", **batch)
    dataset = open_dataset(tmp_path / "train_data_batch_1.npz")
    assert dataset.num_images == 3  # from the .npy header
    got, got_labels = _collect(dataset)
    np.testing.assert_array_equal(got, _nchw(images))
    np.testing.assert_array_equal(got_labels, labels - 1)


# ---------------------------------------------------------------------------------------------
# Choosing images and telling sources apart.


def test_subset_indices_follow_edm_choice():
    assert subset_indices(10, None) is None and subset_indices(10, 10) is None
    idx = subset_indices(100, 30, seed=3)
    expected = np.sort(np.random.RandomState(3).permutation(100)[:30])
    np.testing.assert_array_equal(idx, expected)
    with pytest.raises(UserError, match="found 5 images"):
        subset_indices(5, 10)


def test_open_dataset_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "weird.bin").write_bytes(b"?")
    with pytest.raises(UserError, match="cannot tell what"):
        open_dataset(tmp_path / "weird.bin")
    PIL.Image.new("RGB", (2, 2)).save(tmp_path / "one.png")
    with pytest.raises(UserError, match="single image"):
        open_dataset(tmp_path / "one.png")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable zip"):
        open_dataset(tmp_path / "bad.zip")
