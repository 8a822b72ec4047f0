"""PID's one-time student (``student.kind = "pid"``): x(z, t) from the initial state, sampled in one step.

    x_θ(z, t) = w(t)·z + (1 − w(t))·F(c_in(t_start)·z, c_noise(t), cond),
    w(t) = (t − t_anchor)/(t_start − t_anchor)

the flow map X(z, t_start, t) with its source time fixed at t_start (``FlowMap`` with
``two_times=False``), trained on PID's loss at collocation indices i ~ U{0 … N−1}.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from odedistill.kinds.base import Indices, ObjectiveParts, StudentKind
from odedistill.loss import Autocast, CausalWeights, pid_loss
from odedistill.models.flowmap import FlowMap
from odedistill.models.parametrisation import Parametrisation
from odedistill.systems.scale import residual_scale


def pid_indices(N: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    """PID's collocation indices i ~ U{0 … N−1}, one per sample."""
    return (torch.randint(0, N, (n,), generator=gen),)


def continuous_indices(N: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    """Continuous collocation positions u ~ U[0, N − 1] (float64), one per sample: the times
    ``odedistill.grids.times_at(grid, u)``."""
    return (torch.rand(n, generator=gen, dtype=torch.float64) * (N - 1),)


class PIDObjective(nn.Module):
    """``odedistill.pid_loss`` of ``model`` as a module, returned as float32.

    Only the student is a submodule: the teacher (inside the system), the distance and the
    grid are held in a tuple, out of the module tree and out of DDP's parameter sync.
    ``autocast`` opens the run's precision around the networks' forward passes.
    """

    def __init__(
        self,
        model: nn.Module,
        system: Any,
        scheme: Any,
        distance: Any,
        grid: torch.Tensor,
        autocast: Autocast,
        causal: CausalWeights | None = None,
        through: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self._parts = (system, scheme, distance, grid, autocast)
        self.causal = causal
        self.through = through

    def forward(
        self, z: torch.Tensor, idx: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        system, scheme, distance, grid, autocast = self._parts
        losses = pid_loss(
            self.model,
            system,
            scheme,
            distance,
            grid,
            z,
            idx,
            cond,
            autocast=autocast,
            through=self.through,
        ).float()
        return losses if self.causal is None else self.causal(idx, losses)


class PIDStudent(StudentKind):
    """x(z, t) from the initial state, one-step sampling (PID)."""

    capabilities = frozenset({"causal"})

    def build(
        self, net: nn.Module, system: Any, param: Parametrisation, options: Any, cfg: Any
    ) -> FlowMap:
        return FlowMap(net, system.t_start, system.t_end, param, two_times=False)

    def rebuild(self, net: nn.Module, spec: dict[str, Any], param: Parametrisation) -> FlowMap:
        return FlowMap(net, spec["t_start"], spec["t_end"], param, two_times=False)

    def objective(self, parts: ObjectiveParts, options: Any) -> nn.Module:
        causal = None
        if parts.causal_eps > 0:
            system = parts.system
            n = 64 if system.is_image else 4096
            f2 = residual_scale(system, n, device=parts.device)
            causal = CausalWeights(parts.grid.shape[0], parts.causal_eps, f2)
        return PIDObjective(
            parts.model,
            parts.system,
            parts.scheme,
            parts.distance,
            parts.grid,
            parts.autocast,
            causal,
            through=parts.through,
        )

    def indices(self, options: Any, continuous: bool) -> Indices:
        return continuous_indices if continuous else pid_indices
