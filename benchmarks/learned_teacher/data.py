"""The scikit-learn digits as images in [-1, 1], split once: a seeded 80/20 train / held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from odedistill import UserError

#: the split's seed and held-out fraction (1797 images: 1438 train, 359 held out)
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.2

#: where the shipped files live: odedistill/data/digits/ (package data)
DATA_DIR = Path(__file__).resolve().parents[2] / "odedistill" / "data" / "digits"
TEACHER_FILE = "teacher.safetensors"
DETECTOR_FILE = "detector.pt"
REF_FILE = "fd_heldout.npz"
TRAIN_REF_FILE = "fd_train.npz"


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images as float32 (n, 1, 8, 8) in [-1, 1] (pixel / 8 - 1) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise UserError("the digits need scikit-learn: pip install -e '.[digits]'") from e
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    return x, torch.as_tensor(d.target, dtype=torch.long)


def split() -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and held-out images: a RandomState(SPLIT_SEED) permutation."""
    n = 1797
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_heldout = round(n * HELDOUT_FRACTION)
    return np.sort(perm[n_heldout:]), np.sort(perm[:n_heldout])


def train_and_heldout() -> tuple[
    tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]:
    """``((x_train, y_train), (x_heldout, y_heldout))``."""
    x, y = digits()
    tr, ho = split()
    return (x[tr], y[tr]), (x[ho], y[ho])
