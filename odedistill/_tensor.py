"""Small tensor helpers shared by systems, models and schemes."""

from __future__ import annotations

import torch


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-sample tensor (B,) to (B, 1, ..., 1) with ``ndim`` dimensions in all."""
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))
