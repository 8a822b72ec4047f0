"""teacher.kind = 'edm': a released EDM checkpoint (.pkl) or its converted .safetensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import Teacher, TeacherFamily
from odedistill.teachers.architectures import EDM_PRETRAINED_URL
from odedistill.teachers.load import load_teacher


@dataclass
class EDMOptions:
    path: str = _f(
        "",
        "a released .pkl or a converted .safetensors; a relative path not found from the "
        "working directory is looked up beside the recipe",
    )


def edm_teacher(D: nn.Module) -> Teacher:
    """An EDM preconditioner as a teacher: images (C, H, W) and its classes."""
    return Teacher(D, (D.img_channels, D.img_resolution, D.img_resolution), D.label_dim)


class EDMFamily(TeacherFamily):
    """an EDM checkpoint .pkl or converted .safetensors.

    EDM's preconditioned denoisers (EDM, VP or VE) from a checkpoint file, loaded without
    running code from it; a student may copy the raw network.
    """

    config = EDMOptions
    capabilities = frozenset({"needs_path", "network"})

    def build(self, options: EDMOptions, cfg: Any, device: torch.device) -> Teacher:
        path = Path(options.path)
        if not path.is_file():
            raise UserError(
                f"teacher checkpoint not found: {path}; download the EDM checkpoint it names "
                f"from {EDM_PRETRAINED_URL}{path.stem}.pkl (or convert one with 'odedistill "
                "convert') and set teacher.path; see docs/scale.md"
            )
        return edm_teacher(load_teacher(path, device))
