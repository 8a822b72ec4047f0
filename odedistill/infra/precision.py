"""Mixed precision and memory options: autocast with fp32 master weights, fp16 loss scaling, TF32, checkpointing.

The networks (student F and teacher D) run under ``torch.autocast`` in bf16 or fp16; their
outputs come back as float32, so the boundary combination x = w z + (1 - w) F and the
finite differences of the residual schemes are computed in fp32. The weights, gradients,
optimiser state and EMAs stay fp32. fp16 adds dynamic loss scaling (``torch.amp.GradScaler``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from odedistill.errors import UserError

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class Precision:
    """A run's numeric precision ('fp32', 'bf16' or 'fp16') on a device type ('cpu', 'cuda')."""

    name: str
    device_type: str

    def __post_init__(self) -> None:
        if self.name not in AUTOCAST_DTYPES:
            raise ValueError(f"unknown precision {self.name!r}; expected {list(AUTOCAST_DTYPES)}")

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for fp32."""
        return AUTOCAST_DTYPES[self.name]

    def autocast(self) -> AbstractContextManager[Any]:
        """``torch.autocast`` in this precision (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        """Dynamic loss scaling for fp16; None otherwise (bf16 has fp32's exponent range)."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device_type)


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 tensor cores for fp32 matmuls and cuDNN convolutions."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def _float_output(out: Any) -> Any:
    if isinstance(out, torch.Tensor) and out.dtype in (torch.float16, torch.bfloat16):
        return out.float()
    return out


def autocast_forward(net: nn.Module, precision: Precision) -> nn.Module:
    """Make ``net``'s forward run under autocast and return float32 (in place; fp32: unchanged).

    Only the instance's ``forward`` changes: parameters, state dict and copies made before
    stay as they were.
    """
    if precision.dtype is None:
        return net
    inner = net.forward

    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        with precision.autocast():
            return _float_output(inner(*args, **kwargs))

    net.forward = forward
    return net


def _checkpointed(inner: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    return forward


def checkpoint_blocks(net: nn.Module) -> int:
    """Recompute the activations of ``net``'s blocks in the backward pass (in place).

    The blocks are the entries of every ``nn.ModuleList`` / ``nn.ModuleDict`` that hold
    parameters (EDM's encoder and decoder blocks, the small UNet's and MLP's blocks); a
    network without such containers is checkpointed as a whole. Only block inputs are kept
    between the forward and the backward pass. Returns the number of checkpointed modules.
    """
    blocks: list[nn.Module] = []
    inside: set[int] = set()  # modules already within a chosen block: no nested checkpoints
    for m in net.modules():
        if id(m) in inside or not isinstance(m, nn.ModuleList | nn.ModuleDict):
            continue
        for child in m.children():
            if id(child) not in inside and any(True for _ in child.parameters()):
                blocks.append(child)
                inside.update(id(d) for d in child.modules())
    for block in blocks or [net]:
        block.forward = _checkpointed(block.forward)
    return len(blocks) or 1


def channels_last(net: nn.Module) -> nn.Module:
    """Convert ``net``'s 4-D weights to the channels-last (NHWC) layout (in place)."""
    return net.to(memory_format=torch.channels_last)


def prepare_networks(
    net: nn.Module,
    teacher: nn.Module | None,
    options: Any,
    precision: Precision,
    *,
    image: bool,
    forward_ad: bool,
    cuda: bool,
) -> None:
    """Apply a run's precision, memory-layout, checkpointing and compilation options (in place).

    ``options`` is the recipe's ``[train]`` section: ``tf32``, ``channels_last``,
    ``checkpoint_activations`` and ``compile``; ``net`` is the student's network.
    """
    if cuda:
        set_tf32(options.tf32)
    if options.channels_last and image:
        channels_last(net)
        if teacher is not None:
            channels_last(teacher)
    if options.checkpoint_activations:
        if forward_ad:
            raise UserError(
                "train.checkpoint_activations does not work with scheme.kind = 'autodiff' "
                "(no forward-mode rule through recomputation); use 'upwind' or 'central'"
            )
        checkpoint_blocks(net)
    autocast_forward(net, precision)
    if options.compile:
        net.compile()
        if teacher is not None:
            teacher.compile()
