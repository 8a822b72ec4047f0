"""Beyond the odesuite: a system whose f is expensive, where the student's one evaluation pays.

The suite's ten fields cost a few dozen flops per state, so a batched fixed-step solver in torch
is cheaper than any network. A learned vector field (a neural ODE) is the opposite case: each
evaluation of f is a network itself.
"""

from __future__ import annotations

import math

import torch

from benchmarks.odesuite.systems import SuiteSystem
from odedistill import ODESystem


class NeuralField(ODESystem):
    """x' = −x + A tanh(W₂ tanh(W₁ x + b₁) + b₂) in R⁴: a fixed random MLP of ``width`` hidden
    units (two layers) as the field, like a trained neural ODE; z ~ N(0, I).

    Weights are drawn once from ``seed`` with variance 1/fan-in (A's scaled to keep |f| of
    order one); the −x term keeps every trajectory bounded. One evaluation costs about
    2 (4 w + w² + 4 w) flops per state: 0.14 MFLOP at w = 256, about what one evaluation of
    the default student (an MLP 128 x 3 on 32 Fourier features of the state) costs; a solver
    needs many.
    """

    def __init__(self, width: int = 256, T: float = 2.0, seed: int = 0) -> None:
        self.t_start, self.t_end, self.state_shape = 0.0, T, (4,)
        g = torch.Generator().manual_seed(seed)
        d = 4
        self.W1 = torch.randn(width, d, generator=g, dtype=torch.float64) * 1.5 / math.sqrt(d)
        self.b1 = torch.randn(width, generator=g, dtype=torch.float64) * 0.5
        self.W2 = torch.randn(width, width, generator=g, dtype=torch.float64) / math.sqrt(width)
        self.b2 = torch.randn(width, generator=g, dtype=torch.float64) * 0.5
        self.A = torch.randn(d, width, generator=g, dtype=torch.float64) * 2 / math.sqrt(width)
        self._cast: dict[torch.dtype, tuple[torch.Tensor, ...]] = {}

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        if dtype not in self._cast:
            self._cast[dtype] = tuple(
                w.to(dtype) for w in (self.W1, self.b1, self.W2, self.b2, self.A)
            )
        return self._cast[dtype]

    def f(self, x, t, cond=None):
        W1, b1, W2, b2, A = self._weights(x.dtype)
        h = torch.tanh(x @ W1.T + b1)
        return -x + torch.tanh(h @ W2.T + b2) @ A.T

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.randn((n, 4), generator=generator, dtype=dtype)


#: systems the solver benchmark adds to the suite's
EXPENSIVE: dict[str, SuiteSystem] = {
    "neural": SuiteSystem(
        NeuralField, 64, "uniform",
        "x' = -x + A tanh(W2 tanh(W1 x + b1) + b2), a random MLP of width 256 (dim 4)",
        "[0, 2]", "N(0, I)", "-",
    ),
}  # fmt: skip
