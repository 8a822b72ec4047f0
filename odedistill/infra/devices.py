"""Device names: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:K'; bad ones are one-line errors."""

from __future__ import annotations

import torch

from odedistill.errors import UserError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The device ``name`` means; None and 'auto' pick CUDA when it is available."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"{name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:K'") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asks for CUDA but no GPU is available; use 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPUs")
    return device
