"""teacher.kind = 'diffusers': a DDPM-style UNet2DModel and its scheduler saved by diffusers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from odedistill.errors import UserError
from odedistill.fields import _f
from odedistill.kinds.base import Teacher, TeacherFamily
from odedistill.teachers.diffusers import DiffusersDenoiser
from odedistill.teachers.diffusers_load import load_diffusers_teacher


@dataclass
class DiffusersOptions:
    path: str = _f(
        "",
        "a folder written by save_pretrained (unet/ and scheduler/, or a UNet with its "
        "scheduler_config.json), or a Hugging Face Hub id (owner/name) in the local cache; a "
        "relative path not found from the working directory is looked up beside the recipe",
    )


def check_schedule_range(D: DiffusersDenoiser, t_min: float, t_max: float) -> None:
    """The probability-flow ODE's interval must lie in the schedule's [σ_0, σ_{N−1}] (to 1e-3).

    Outside it the network's time input would be clamped to the first or last timestep.
    """
    lo, hi = D.sigma_min, D.sigma_max
    if t_min < lo * (1 - 1e-3) or t_max > hi * (1 + 1e-3):
        raise UserError(
            f"system.t_min = {t_min:g} and system.t_max = {t_max:g} must lie in the diffusers "
            f"schedule's noise range [{lo:.6g}, {hi:.6g}] (sigma of timesteps 0 and "
            f"{len(D.sigmas) - 1}); set system.t_min and system.t_max inside it"
        )


class DiffusersFamily(TeacherFamily):
    """a DDPM-style UNet2DModel and its scheduler saved by diffusers' save_pretrained.

    D(x; σ) of a discrete-schedule network (ε, v or x0 prediction) at continuous σ, read
    from JSON configs and safetensors only; a student may copy the raw UNet.
    """

    config = DiffusersOptions
    capabilities = frozenset({"needs_path", "network"})

    def build(self, options: DiffusersOptions, cfg: Any, device: torch.device) -> Teacher:
        D = load_diffusers_teacher(Path(options.path), device)
        interval = cfg.system.options
        check_schedule_range(D, interval.t_min, interval.t_max)
        return Teacher(D, D.state_shape, D.label_dim)
