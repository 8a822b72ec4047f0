"""teacher.kind = 'edm_random': an untrained EDM network of a named architecture (tests, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from odedistill.fields import _f
from odedistill.kinds.base import Teacher, TeacherFamily
from odedistill.kinds.teachers.edm import edm_teacher
from odedistill.teachers.architectures import (
    EDM_ARCHITECTURES,
    edm_architecture,
    random_edm_teacher,
)


@dataclass
class EDMRandomOptions:
    arch: str = _f(
        "ddpmpp",
        "EDM's configuration 'ddpmpp' (CIFAR-10 VP), 'ncsnpp' (CIFAR-10 VE) or 'adm' (ImageNet-64)",
        choices=tuple(EDM_ARCHITECTURES),
    )
    img_resolution: int = _f(
        0,
        "image size (0 = the configuration's: 32, or 64 for adm); attention stays at the same "
        "fractions of it",
        lo=0,
        hi=1024,
    )
    label_dim: int = _f(
        -1, "classes (-1 = the configuration's: 0, or 1000 for adm)", lo=-1, hi=100000
    )
    model_channels: int = _f(
        0, "base channels (0 = the configuration's: 128, or 192 for adm)", lo=0, hi=4096
    )
    channel_mult: list[int] = _f(
        [],
        "channel multiplier per resolution ([] = the configuration's)",
        item=dict(lo=1, hi=64),
        max_len=8,
    )
    num_blocks: int = _f(
        0, "residual blocks per resolution (0 = the configuration's: 4, or 3)", lo=0, hi=64
    )


class EDMRandomFamily(TeacherFamily):
    """an untrained EDM network of architecture teacher.arch: a stand-in for tests.

    An EDMPrecond of EDM's configuration ``arch`` (optionally shrunk) with random weights
    (the run's seed): a stand-in of a real teacher's shapes and cost.
    """

    config = EDMRandomOptions
    capabilities = frozenset({"network"})

    def build(self, options: EDMRandomOptions, cfg: Any, device: torch.device) -> Teacher:
        o = options
        kw = edm_architecture(
            o.arch, o.img_resolution, o.label_dim, o.model_channels, o.channel_mult, o.num_blocks
        )
        return edm_teacher(random_edm_teacher(kw, device))
