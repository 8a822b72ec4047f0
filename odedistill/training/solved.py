"""Solved states beside the residual (``loss.solved``): the student also fits trajectories the reference solver computed.

For a general ODE the reference solver is cheap next to training, so a pool of M initial
states z_j (and conditions c_j) is solved once, at the times τ_0 = t_start < … < τ_{P−1} = t_end,
and each sample b of a batch adds to the student kind's residual loss ℓ_b

    λ · f2 · [ d(x_θ(z_j, t_end) / s, x*_j(t_end) / s) + d(x_θ(z_j, τ_k) / s, x*_j(τ_k) / s) ]

with j ~ U{0 … M−1} and k ~ U{0 … P−1} drawn from the run's noise stream (so a resumed run
draws the same), x*_j the solver's trajectory, s_c² the pool's mean square of component c at
t_end, d the run's distance (``loss.distance``: 'l2' the mean squared difference over
components, 'pseudo_huber' √(|·|² + c²) − c, close to the norm of the difference, which is
what the norm-relative error averages) and f2 the system's residual scale
(``systems.scale.residual_scale``): with 'l2' an error δ relative to the state's size weighs
as a residual δ relative to the velocity's. The endpoint,
which is what one-step sampling returns, is fitted on every sample; one interior time keeps
the whole trajectory (and the a-posteriori indicator along it) honest.

The pool is drawn with its own seed (the run's plus a fixed offset) and is the same on every
run with that seed; it never meets the held-out states that validation measures. A network
teacher (a diffusion model) has no cheap reference solve, so PID's data-free loss stays its own.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.kinds.base import Indices
from odedistill.solvers import solve_reference
from odedistill.systems.base import ODESystem
from odedistill.systems.scale import residual_scale

#: the pool's seed is the run's plus this, so it is never the noise stream's draw
POOL_SEED_OFFSET = 90_210
#: most solver times stored per trajectory (the grid, thinned evenly when longer)
MAX_TIMES = 65


def pool_times(grid: torch.Tensor) -> torch.Tensor:
    """The grid's times, or MAX_TIMES of them evenly spaced by index (both ends kept)."""
    n = grid.shape[0]
    if n <= MAX_TIMES:
        return grid.detach().double().cpu()
    pick = torch.linspace(0, n - 1, MAX_TIMES).round().long()
    return grid.detach().double().cpu()[pick]


class SolvedStates:
    """M initial states, their conditions and their reference trajectories at ``times``.

    ``trajectories`` is (P, M, *state_shape) in the model's dtype on ``device``; ``scale``
    (*state_shape) the root of the per-component mean square at t_end (floored); ``seconds``
    the process time the solve took (it counts as training time).
    """

    def __init__(
        self,
        system: ODESystem,
        M: int,
        times: torch.Tensor,
        seed: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if system.network_teacher:
            raise UserError(
                "'loss.solved' fits trajectories of the reference solver, which for a network "
                "teacher (a diffusion model) is the teacher itself: set loss.solved = 0 and "
                "train PID's data-free loss"
            )
        tick = time.process_time()
        g = torch.Generator().manual_seed(seed + POOL_SEED_OFFSET)
        z = system.sample_initial(M, g, dtype=torch.float64)
        c = system.sample_condition(M, g)
        c = None if c is None else c.double()
        traj = solve_reference(system, z, c, t_eval=times.tolist())
        self.seconds = time.process_time() - tick
        self.M = M
        self.times = times.to(device=device, dtype=dtype)
        self.z = z.to(device=device, dtype=dtype)
        self.cond = None if c is None else c.to(device=device, dtype=dtype)
        self.trajectories = traj.to(device=device, dtype=dtype)
        end = traj[-1].flatten(1)
        s2 = end.pow(2).mean(0).clamp_min(1e-6 * float(end.pow(2).mean()) + 1e-30)
        self.scale = s2.sqrt().reshape(traj.shape[2:]).to(device=device, dtype=dtype)
        self.f2 = residual_scale(system)

    def loss(
        self,
        model: nn.Module,
        j: torch.Tensor,
        k: torch.Tensor,
        a: torch.Tensor,
        distance: nn.Module,
    ) -> torch.Tensor:
        """Per-sample misfit (B,) of ``model`` at pool members ``j``: f2 · d(x_θ / s, x* / s)
        summed over the endpoint and time τ_k, both from t_start, with s = ``scale`` and d the
        run's distance (``odedistill.distances``). A flow map (``model.multi_step``) jumps from
        the solver's state at τ_min(a, k) instead, to t_end and to τ_max(a, k), so that every
        jump its K-step sampler takes is fitted."""
        j, k, a = j.long(), k.long(), a.long()
        B = j.shape[0]
        cond = None if self.cond is None else self.cond[j]
        cond2 = None if cond is None else torch.cat([cond, cond])
        end = self.times[-1].expand(B)
        if model.multi_step:
            a, k = torch.minimum(a, k), torch.maximum(a, k)
            x_a = self.trajectories[a, j]
            s = self.times[a].repeat(2)
            x = model.transport(torch.cat([x_a, x_a]), s, torch.cat([end, self.times[k]]), cond2)
        else:
            z = self.z[j]
            x = model(torch.cat([z, z]), torch.cat([end, self.times[k]]), cond2)
        exact = torch.cat([self.trajectories[-1, j], self.trajectories[k, j]])
        scale = self.scale.to(x.dtype)
        d = distance(x / scale, exact.to(x.dtype) / scale)
        return self.f2 * (d[:B] + d[B:])


def with_pool_indices(indices: Indices, M: int, P: int) -> Indices:
    """The student kind's indices, then j ~ U{0 … M−1} and k, a ~ U{0 … P−1} from the same stream."""

    def draw(N: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        own = indices(N, n, gen)
        j = torch.randint(0, M, (n,), generator=gen)
        k = torch.randint(0, P, (n,), generator=gen)
        a = torch.randint(0, P, (n,), generator=gen)
        return (*own, j, k, a)

    return draw


class SolvedObjective(nn.Module):
    """``weight`` times the pool's misfit plus the student kind's per-sample residual loss,
    the latter on the first ⌈``fraction`` · B⌉ samples only, divided by ``fraction`` (so its
    expectation is unchanged; fraction 0: the misfit alone, no residual at all).

    Called as ``objective(z, *kind_indices, j, k, a, cond)``: the last three are the pool's.
    """

    def __init__(
        self,
        inner: nn.Module,
        model: nn.Module,
        pool: SolvedStates,
        weight: float,
        distance: nn.Module,
        fraction: float = 1.0,
    ) -> None:
        super().__init__()
        self.inner = inner
        self._parts = (model, pool, distance)  # the model is inner's submodule already
        self.weight = float(weight)
        self.fraction = float(fraction)

    def forward(self, z: torch.Tensor, *rest: torch.Tensor | None) -> torch.Tensor:
        *idx, j, k, a, cond = rest
        model, pool, distance = self._parts
        out = self.weight * pool.loss(model, j, k, a, distance)  # type: ignore[arg-type]
        n = min(z.shape[0], math.ceil(self.fraction * z.shape[0]))
        if n == 0:
            return out.float()
        part = [t[:n] for t in idx]  # type: ignore[index]
        own = self.inner(z[:n], *part, None if cond is None else cond[:n])
        scale = z.shape[0] / n
        return torch.cat([out[:n] + scale * own.to(out.dtype), out[n:]]).float()
