"""Small tensor helpers shared by systems, models and schemes."""

from __future__ import annotations

import torch


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-sample tensor (B,) to (B, 1, ..., 1) with ``ndim`` dimensions in all."""
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def per_sample(t: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """Turn a scalar or (B,) time into a (B,) tensor on ``like``'s device and dtype."""
    t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
    if t.ndim == 0:
        t = t.expand(n)
    return t
