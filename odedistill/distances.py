"""Per-sample distances d(a, b) for the PID loss: squared L2, pseudo-Huber and LPIPS."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from odedistill.errors import UserError
from odedistill.registry import Registry


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


DISTANCES: Registry = Registry("distance")
DISTANCES.register("l2", lambda huber_c: SquaredL2(), help="mean squared difference")
DISTANCES.register(
    "pseudo_huber",
    lambda huber_c: PseudoHuber(huber_c or None),
    help="sqrt(|a - b|^2 + c^2) - c, c = loss.huber_c or 0.00054 sqrt(dim)",
)
DISTANCES.register(
    "lpips", lambda huber_c: LPIPS(), help="LPIPS with VGG features (the 'lpips' package)"
)


def make_distance(name: str, huber_c: float = 0.0) -> Distance:
    """The distance registered as ``name`` (``DISTANCES.names()``); ``huber_c`` for pseudo-Huber."""
    return DISTANCES.get(name)(huber_c)
