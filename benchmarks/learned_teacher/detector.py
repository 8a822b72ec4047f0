"""A digits detector for a Fréchet distance: a small CNN classifier, saved as TorchScript.

Its call is the Inception detector's, ``detector(images, return_features=True)`` on uint8 NCHW
images (grey repeated to 3 channels), so ``odedistill fid`` / ``fid-ref`` and the recipe's
FID code compute "digits FD" exactly as they compute FID: Fréchet distance of the 64 pool
features (the global average of the last convolution) under Gaussians fitted to them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.learned_teacher.data import train_and_heldout
from odedistill import atomic_write, to_uint8

FEATURES = 64


class DigitsDetector(nn.Module):
    """conv 3x3 (32, 32) → max-pool 2 → conv 3x3 (64, 64) → global mean (the pool features) → 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, FEATURES, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        """uint8 (B, C, H, W) pixels (the channels are averaged) → pool features or logits."""
        x = images.to(torch.float32).mean(dim=1, keepdim=True) / 127.5 - 1.0
        f = self.conv(x).mean(dim=(2, 3))
        if return_features:
            return f
        return self.head(f)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images as the uint8 pixels every FD sample becomes (EDM's rounding)."""
    return to_uint8(x).repeat(1, 3, 1, 1)


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to one pixel (background −1 fills in)."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    out = torch.empty_like(x)
    di = torch.randint(0, 3, (x.shape[0], 2), generator=gen)
    for k in range(x.shape[0]):
        i, j = int(di[k, 0]), int(di[k, 1])
        out[k] = padded[k, :, i : i + 8, j : j + 8]
    return out


def train_detector(out: Path, epochs: int = 40, seed: int = 0, log=print) -> dict[str, Any]:
    """Train on the train split (one-pixel shifts), write TorchScript at ``out``; held-out accuracy."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    (x_tr, y_tr), (x_ho, y_ho) = train_and_heldout()
    net = DigitsDetector()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.process_time()
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        for b in range(0, len(x_tr), 64):
            idx = perm[b : b + 64]
            logits = net(_pixels(_shift(x_tr[idx], gen)))
            loss = F.cross_entropy(logits, y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(_pixels(x_ho)).argmax(1) == y_ho).double().mean().item()
        acc_train = (net(_pixels(x_tr)).argmax(1) == y_tr).double().mean().item()
    log(f"detector: held-out accuracy {acc:.4f}, train {acc_train:.4f}")
    scripted = torch.jit.script(net)
    atomic_write(out, lambda tmp: torch.jit.save(scripted, tmp))
    return {
        "heldout_accuracy": acc,
        "train_accuracy": acc_train,
        "epochs": epochs,
        "cpu_seconds": time.process_time() - t0,
        "features": FEATURES,
    }
