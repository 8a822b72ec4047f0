"""Per-sample distances d(a, b) for the PID loss: squared L2, pseudo-Huber and LPIPS."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn


class Distance(nn.Module, ABC):
    """A per-sample distance: (B, ...) x (B, ...) -> (B,)."""

    @abstractmethod
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


class SquaredL2(Distance):
    """mean over the non-batch dims of (a - b)^2 (consistency models' 'l2')."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).flatten(1).mean(1)


class PseudoHuber(Distance):
    """sqrt(|a - b|^2 + c^2) - c, with c = 0.00054 sqrt(dim) by default (Song & Dhariwal 2023)."""

    def __init__(self, c: float | None = None) -> None:
        super().__init__()
        self.c = c

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = (a - b).flatten(1)
        c = self.c if self.c is not None else 0.00054 * math.sqrt(diff.shape[1])
        return torch.sqrt(diff.pow(2).sum(1) + c * c) - c


class LPIPS(Distance):
    """LPIPS with VGG features (Zhang et al. 2018) through the ``lpips`` package.

    Images in [-1, 1] smaller than 256 pixels are bilinearly upsampled to 224 x 224 first,
    as PID's official code and consistency models do. The network is frozen.
    """

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        try:
            import lpips
        except Exception as e:  # ImportError, or torchvision failing to load
            from odedistill.errors import UserError

            raise UserError(
                f"the LPIPS distance needs the 'lpips' package and torchvision ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else 'not importable'}); install them with "
                "pip install 'odedistill[lpips]', or use loss.distance = 'pseudo_huber'"
            ) from e
        self.net = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.ndim != 4:
            raise ValueError("LPIPS compares images (B, C, H, W)")
        if a.shape[1] == 1:
            a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
        if a.shape[-1] < 256:
            a = F.interpolate(a, size=224, mode="bilinear")
            b = F.interpolate(b, size=224, mode="bilinear")
        return self.net(a, b).flatten()


def make_distance(name: str, huber_c: float = 0.0) -> Distance:
    """'l2', 'pseudo_huber' (c = huber_c, or the default when 0) or 'lpips'."""
    if name == "l2":
        return SquaredL2()
    if name == "pseudo_huber":
        return PseudoHuber(huber_c or None)
    if name == "lpips":
        return LPIPS()
    raise ValueError(f"unknown distance {name!r}; expected 'l2', 'pseudo_huber' or 'lpips'")
