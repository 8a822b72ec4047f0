"""Exponential moving averages of the student's weights: p_ema <- r p_ema + (1 - r) p."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """One EMA copy of ``model`` per decay rate; buffers are copied, not averaged."""

    def __init__(self, model: nn.Module, rates: list[float]) -> None:
        self.rates = [float(r) for r in rates]
        self.models = {
            self.key(r): copy.deepcopy(model).eval().requires_grad_(False) for r in self.rates
        }

    @staticmethod
    def key(rate: float) -> str:
        return repr(float(rate))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach() for p in model.parameters()]
        buffers = list(model.buffers())
        for rate in self.rates:
            ema = self.models[self.key(rate)]
            torch._foreach_lerp_(list(ema.parameters()), params, 1.0 - rate)
            for b_ema, b in zip(ema.buffers(), buffers, strict=True):
                b_ema.copy_(b)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {k: m.state_dict() for k, m in self.models.items()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for k, m in self.models.items():
            if k not in state:
                raise KeyError(f"checkpoint has no EMA for rate {k}")
            m.load_state_dict(state[k])
