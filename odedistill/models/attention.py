"""Scaled dot-product attention that stays usable under forward-mode AD (torch.func.jvp)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(c)) v over the last two dims of (B, heads, L, c) tensors."""
    return F.scaled_dot_product_attention(q, k, v)


@contextlib.contextmanager
def forward_ad_safe_attention() -> Iterator[None]:
    """Route every ``scaled_dot_product_attention`` in the block to the math backend.

    Fused kernels (flash, memory-efficient, and the CPU flash kernel) have no forward-mode
    derivative in PyTorch; the math backend is a composition of matmuls and softmax, which
    has one. The autodiff residual scheme runs its JVP inside this block.
    """
    with sdpa_kernel(SDPBackend.MATH):
        yield


def check_forward_ad_error(err: Exception) -> None:
    """Re-raise a missing forward-AD rule as a one-line explanation."""
    msg = str(err)
    if "forward AD" in msg or "forward-mode" in msg or "jvp" in msg.lower():
        raise RuntimeError(
            "the autodiff scheme needs forward-mode AD through every layer of the student, and "
            f"one layer has no forward-mode rule ({msg.splitlines()[0]}); use attention through "
            "odedistill.models.attention.attention or switch to scheme 'upwind' or 'central'"
        ) from err
    raise err


@functools.cache
def load_jvp_decompositions() -> None:
    """Load torch's forward-mode decompositions once, without its deprecation warning.

    On the first forward-mode call torch imports ``torch._decomp.decompositions_for_jvp``,
    which registers its rules through ``torch.jit.script`` and so warns that TorchScript is
    deprecated, from inside torch. Importing it here first, with that one warning silenced,
    leaves every other warning (and every other use of ``torch.jit.script``) visible.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        try:
            importlib.import_module("torch._decomp.decompositions_for_jvp")
        except ImportError:  # a torch that no longer has it does not warn from it either
            pass
