"""Noise schedules shared by teachers and students: the VP schedule σ(t) = √(exp(½β_d t² + β_min t) − 1)."""

from __future__ import annotations

import torch
from torch import Tensor


def vp_sigma(t: Tensor | float, beta_d: float = 19.9, beta_min: float = 0.1) -> Tensor:
    """VP noise level σ(t) = √(exp(½β_d t² + β_min t) − 1) (EDM Table 1)."""
    t = torch.as_tensor(t)
    return torch.expm1(0.5 * beta_d * t**2 + beta_min * t).sqrt()


def vp_sigma_inv(sigma: Tensor | float, beta_d: float = 19.9, beta_min: float = 0.1) -> Tensor:
    """t_VP(σ), the positive root of ½β_d t² + β_min t = ln(1 + σ²)."""
    sigma = torch.as_tensor(sigma)
    return ((beta_min**2 + 2 * beta_d * torch.log1p(sigma**2)).sqrt() - beta_min) / beta_d
