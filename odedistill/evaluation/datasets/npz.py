""".npz files of uint8 images: read without pickles, and their arrays' shapes from the header alone."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from odedistill.errors import UserError


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path} is not a readable .npz of plain arrays ({e})") from e


def npz_rows(path: Path, key: str) -> int | None:
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
