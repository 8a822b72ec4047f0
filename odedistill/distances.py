"""Per-sample distances d(a, b) for the PID loss: squared L2, pseudo-Huber and LPIPS (two variants)."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class WeightFile:
    """A pretrained file that torch hub caches as ``<torch hub dir>/checkpoints/<name>``."""

    name: str
    url: str
    what: str

    @property
    def hash_prefix(self) -> str | None:
        """The SHA-256 prefix torchvision puts in its file names (``vgg16-397923af.pth``)."""
        m = re.search(r"-([a-f0-9]{6,})\.", self.name)
        return m.group(1) if m else None


VGG16_IMAGENET = WeightFile(
    "vgg16-397923af.pth",
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    "torchvision's VGG-16 ImageNet weights (VGG16_Weights.IMAGENET1K_V1)",
)
PIQ_LPIPS_LAYERS = WeightFile(
    "lpips_weights.pt",
    "https://github.com/photosynthesis-team/photosynthesis.metrics/releases/download/v0.4.0/lpips_weights.pt",
    "piq's per-channel LPIPS layer weights",
)


def hub_checkpoints() -> Path:
    """Where torch hub caches downloaded weights: $TORCH_HOME/hub/checkpoints (~/.cache/torch/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _where_to_put(files: list[WeightFile], folder: Path) -> str:
    return (
        "download "
        + ", ".join(f"{f.url} ({f.what})" for f in files)
        + f" into {folder} (keeping the file name{'s' if len(files) > 1 else ''} "
        + ", ".join(f.name for f in files)
        + "), or set TORCH_HOME to a folder whose hub/checkpoints holds them"
    )


def ensure_weights(files: tuple[WeightFile, ...], label: str, download: bool = True) -> None:
    """Make sure every file is in torch hub's cache, downloading the missing ones.

    Raises UserError naming each file that is neither cached nor downloadable, where it
    comes from, and the folder to put it in.
    """
    folder = hub_checkpoints()
    missing = [f for f in files if not (folder / f.name).is_file()]
    if not missing:
        return
    reason = "downloads are off"
    if download:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for f in missing:
                torch.hub.download_url_to_file(
                    f.url, str(folder / f.name), hash_prefix=f.hash_prefix, progress=False
                )
            return
        except Exception as e:  # no network, HTTP error, hash mismatch, unwritable folder
            reason = f"the download failed ({_first_line(e)})"
        missing = [f for f in files if not (folder / f.name).is_file()]
    raise UserError(
        f"{label} needs weights that are not cached and {reason}: {_where_to_put(missing, folder)}"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _missing_package(label: str, package: str, e: BaseException, files) -> UserError:
    folder = hub_checkpoints()
    missing = [f for f in files if not (folder / f.name).is_file()]
    also = f"; it also needs weights: {_where_to_put(missing, folder)}" if missing else ""
    return UserError(
        f"{label} needs the '{package}' package and a torchvision that imports "
        f"({_first_line(e)}); install them with {lpips_install_line()}, or use "
        f"loss.distance = 'pseudo_huber'{also}"
    )


def lpips_install_line(torch_version: str | None = None) -> str:
    """The install line of the LPIPS extra for this torch: torchvision 0.(minor + 15) is the one
    built for torch 2.minor (0.28 for 2.13), installed first so that pip keeps the torch; a
    local build such as ``+cpu`` takes its torchvision from PyTorch's index of that build (the
    PyPI wheel does not load against a CPU-only torch)."""
    full = torch_version or torch.__version__
    version = full.split("+")[0].split(".")
    if len(version) >= 2 and version[0] == "2" and version[1].isdigit():
        vision = f"torchvision==0.{int(version[1]) + 15}.*"
        local = full.split("+")[1] if "+" in full else ""
        index = f" --index-url https://download.pytorch.org/whl/{local}" if local else ""
        return f"pip install '{vision}'{index} && pip install -e '.[lpips]' (from a clone)"
    return "pip install -e '.[lpips]' (from a clone) after the torchvision built for your torch"


def perceptual_input(x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) as the VGG distances take them: grey repeated to RGB, and bilinearly
    upsampled to 224 x 224 when under 256 pixels wide (as PID's official code and consistency
    models do)."""
    if x.ndim != 4:
        raise ValueError(f"LPIPS compares images (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] < 256:
        x = F.interpolate(x, size=224, mode="bilinear")
    return x


class LPIPSMaxPool(Distance):
    """LPIPS v0.1 (Zhang et al. 2018) on VGG-16 with its max pooling, through the ``lpips`` package.

        d(a, b) = sum_l mean_hw sum_c w_lc (f_l(a) - f_l(b))_c^2,   f_l = unit-normalised features

    at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG-16, on images in [-1, 1]
    (standardised inside by lpips' shift/scale, which equals the ImageNet mean/std on [0, 1]).
    The layer weights w ship inside the lpips package; torchvision's VGG-16 ImageNet
    weights (vgg16-397923af.pth) come from torch hub's cache or are downloaded. This is not
    the paper's variant: see :class:`LPIPSAvgPool`. The network is frozen.
    """

    weights = (VGG16_IMAGENET,)
    label = "LPIPS (max pooling, lpips package)"

    def __init__(self, download: bool = True) -> None:
        super().__init__()
        try:
            import lpips
        except Exception as e:  # ImportError, or torchvision failing to load
            raise _missing_package(self.label, "lpips", e, self.weights) from e
        ensure_weights(self.weights, self.label, download)
        self.net = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(perceptual_input(a), perceptual_input(b)).flatten()


class LPIPSAvgPool(Distance):
    """The paper's LPIPS: piq's VGG-16 LPIPS with average pooling (``piq.LPIPS(replace_pooling=True)``).

    The same sum as :class:`LPIPSMaxPool`, d(a, b) = sum_l mean_hw sum_c w_lc (f_l(a) - f_l(b))_c^2,
    but every 2x2 max pooling of VGG-16 is replaced by a 2x2 average pooling, and the layer
    weights w are piq's ``lpips_weights.pt``. As in PID's official code (cm/karras_diffusion.py),
    images in [-1, 1] are upsampled to 224 x 224 when under 256 pixels and passed as (x + 1)/2,
    which piq standardises with the ImageNet mean and std; the reduction is per sample
    (``reduction='none'``). Needs torchvision's vgg16-397923af.pth and piq's lpips_weights.pt
    in torch hub's cache (downloaded when missing). The network is frozen.
    """

    weights = (VGG16_IMAGENET, PIQ_LPIPS_LAYERS)
    label = "LPIPS (average pooling, piq; the paper's)"

    def __init__(self, download: bool = True) -> None:
        super().__init__()
        try:
            import piq
        except Exception as e:  # ImportError, or torchvision failing to load
            raise _missing_package(self.label, "piq", e, self.weights) from e
        ensure_weights(self.weights, self.label, download)
        self.net = piq.LPIPS(replace_pooling=True, reduction="none").eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = perceptual_input(a), perceptual_input(b)
        return self.net((a + 1) / 2, (b + 1) / 2).flatten()


LPIPS = LPIPSMaxPool
"""The lpips package's LPIPS (max pooling), under its old name; ``LPIPSAvgPool`` is the paper's."""


DISTANCES: Registry = Registry("distance")
DISTANCES.register("l2", lambda huber_c: SquaredL2(), help="mean squared difference")
DISTANCES.register(
    "pseudo_huber",
    lambda huber_c: PseudoHuber(huber_c or None),
    help="sqrt(|a - b|^2 + c^2) - c, c = loss.huber_c or 0.00054 sqrt(dim)",
)
DISTANCES.register(
    "lpips_avgpool",
    lambda huber_c: LPIPSAvgPool(),
    help="the paper's LPIPS: piq's VGG-16 LPIPS with average pooling, as PID's official code",
)
DISTANCES.register(
    "lpips_maxpool",
    lambda huber_c: LPIPSMaxPool(),
    help="LPIPS v0.1 of the 'lpips' package, VGG-16 with max pooling (not the paper's)",
)
DISTANCES.register(
    "lpips",
    lambda huber_c: LPIPSMaxPool(),
    help="an alias of 'lpips_maxpool' (the 'lpips' package, max pooling), kept for old recipes",
)


def make_distance(name: str, huber_c: float = 0.0) -> Distance:
    """The distance registered as ``name`` (``DISTANCES.names()``); ``huber_c`` for pseudo-Huber."""
    return DISTANCES.get(name)(huber_c)
