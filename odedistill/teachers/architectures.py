"""EDM's released network configurations (Karras et al. 2022, App. F.2), and untrained stand-ins built from them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.teachers.precond import EDMPrecond

EDM_PRETRAINED_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"

#: EDM's released network configurations (Karras et al. 2022, App. F.2; EDM's train.py)
EDM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ddpmpp": dict(
        img_resolution=32,
        label_dim=0,
        model_type="SongUNet",
        embedding_type="positional",
        encoder_type="standard",
        decoder_type="standard",
        channel_mult_noise=1,
        resample_filter=[1, 1],
        model_channels=128,
        channel_mult=[2, 2, 2],
        num_blocks=4,
        attn_resolutions=[16],
        augment_dim=9,
        dropout=0.13,
    ),
    "ncsnpp": dict(
        img_resolution=32,
        label_dim=0,
        model_type="SongUNet",
        embedding_type="fourier",
        encoder_type="residual",
        decoder_type="standard",
        channel_mult_noise=2,
        resample_filter=[1, 3, 3, 1],
        model_channels=128,
        channel_mult=[2, 2, 2],
        num_blocks=4,
        attn_resolutions=[16],
        augment_dim=9,
        dropout=0.13,
    ),
    "adm": dict(
        img_resolution=64,
        label_dim=1000,
        model_type="DhariwalUNet",
        model_channels=192,
        channel_mult=[1, 2, 3, 4],
        num_blocks=3,
        attn_resolutions=[32, 16, 8],
        augment_dim=0,
        dropout=0.1,
    ),
}


def edm_architecture(
    arch: str,
    img_resolution: int = 0,
    label_dim: int = -1,
    model_channels: int = 0,
    channel_mult: list[int] | None = None,
    num_blocks: int = 0,
) -> dict[str, Any]:
    """``EDMPrecond`` keyword arguments of EDM's configuration ``arch``, optionally shrunk.

    Zero (or -1, or an empty list) keeps the configuration's value. A different image size
    keeps attention at the same fractions of it (16 of 32 becomes 4 of 8).
    """
    if arch not in EDM_ARCHITECTURES:
        raise UserError(
            f"unknown EDM architecture {arch!r}; expected {', '.join(EDM_ARCHITECTURES)}"
        )
    kw = dict(EDM_ARCHITECTURES[arch])
    native = kw["img_resolution"]
    res = img_resolution or native
    if res != native:
        kw["attn_resolutions"] = [a * res // native for a in kw["attn_resolutions"]]
    kw["img_resolution"] = res
    kw["img_channels"] = 3
    kw["label_dim"] = kw["label_dim"] if label_dim < 0 else label_dim
    kw["model_channels"] = model_channels or kw["model_channels"]
    kw["channel_mult"] = list(channel_mult or kw["channel_mult"])
    kw["num_blocks"] = num_blocks or kw["num_blocks"]
    if res % 2 ** (len(kw["channel_mult"]) - 1):
        raise UserError(
            f"an image of {res} pixels does not halve {len(kw['channel_mult']) - 1} times; "
            "change teacher.img_resolution or teacher.channel_mult"
        )
    return kw


def random_edm_teacher(kwargs: dict[str, Any], device: torch.device | str = "cpu") -> nn.Module:
    """An untrained ``EDMPrecond`` built from ``kwargs`` (global RNG), eval mode, no gradients."""
    return EDMPrecond(**kwargs).to(device).eval().requires_grad_(False)
