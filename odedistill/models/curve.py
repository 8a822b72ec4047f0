"""Curves u ↦ y(u) of one scalar variable per sample: what a residual scheme differentiates.

A residual equation names its variable; the schemes (``odedistill.schemes``) only see a curve:
    Lagrangian, in t:  y(t) = X(x_s, s, t)                         (PID: y(t) = x_θ(z, t))
    in s:              y(s) = X(x_s, s, t)                          (the partial ∂_s X)
    Eulerian, along (f, 1) in (x, s):  y(h) = X(x_s + h·f(x_s, s), s + h, t),   dy/dh(0) = ∂_s X + ∇_x X·f
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from odedistill._tensor import append_dims


class Curve:
    """A batch of B curves u ↦ y_b(u), each of its own scalar variable u_b.

    ``curve(u)`` evaluates at per-sample values u (B,). ``curve.many([u_1, ..., u_k], fused)``
    evaluates at k value tensors, as one network pass over the batch repeated k times when
    ``fused`` (the same values as k separate passes, up to floating-point summation order).

    Args:
        fn: ``fn(u, *inputs)`` -> states (B, ...); the inputs are per-sample tensors (or None).
        inputs: the batch the curve is drawn through: the initial state z, a flow map's source
            state and time, a direction, the condition. The first one sets the curve's dtype.
    """

    def __init__(
        self, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor | None]
    ) -> None:
        self.fn = fn
        self.inputs = tuple(inputs)

    @property
    def dtype(self) -> torch.dtype:
        return self.inputs[0].dtype

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self.fn(u, *self.inputs)

    def many(self, values: list[torch.Tensor], fused: bool = True) -> list[torch.Tensor]:
        if not fused or len(values) == 1:
            return [self(u) for u in values]
        k = len(values)
        inputs = [None if a is None else torch.cat([a] * k) for a in self.inputs]
        return list(self.fn(torch.cat(values), *inputs).chunk(k))


def along(
    F: Callable[..., torch.Tensor],
    x: torch.Tensor,
    s: torch.Tensor,
    dx: torch.Tensor,
    ds: float = 1.0,
    rest: Sequence[torch.Tensor | None] = (),
) -> Curve:
    """The line h ↦ F(x + h·dx, s + h·ds, *rest) through the point (x, s) of state × time.

    Its derivative at h = 0 is the directional derivative ∇_x F·dx + ds·∂_s F: with
    dx = f(x, s) and ds = 1 the total derivative of F along the ODE's characteristic through
    (x, s), the Eulerian residual of a flow map F = X(·, ·, t). Differentiate it at the middle
    node of ``centred_nodes(δ)``.
    """

    def fn(h: torch.Tensor, x: torch.Tensor, s: torch.Tensor, dx: torch.Tensor, *rest):
        return F(x + append_dims(h, x.ndim).to(x.dtype) * dx, s + h.to(s.dtype) * ds, *rest)

    return Curve(fn, (x, s, dx, *rest))


def centred_nodes(delta: float) -> torch.Tensor:
    """The nodes (−δ, 0, δ) of a line's variable h, in float64; the point itself is node 1.

    At index 1 every scheme differentiates at h = 0: upwind by the forward difference
    (y(0) − y(δ))/(0 − δ), central by the centred one, autodiff exactly (δ unused).
    """
    return torch.tensor([-delta, 0.0, delta], dtype=torch.float64)
