"""Hard-state replay: part of each batch drawn again from recent collocation points, in proportion to their loss.

A pool holds the P most recent uniform draws (z_j, indices_j, cond_j) with ℓ_j, the per-sample
training loss each had when last trained on. Each step, a fraction α of the batch's rows are
replaced by pool points picked with probability

    π_j = ℓ_j / Σ_k ℓ_k                       (with replacement, from a generator of its own)

and the other rows stay the noise stream's uniform draws, which then enter the pool (oldest
out). The picked points' ℓ_j are refreshed from the step's losses; nothing is evaluated beyond
the training step itself. This is residual-based adaptive sampling (Wu et al. 2023, "A
comprehensive study of non-adaptive and residual-based adaptive sampling for PINNs") fed by
the training loss, as prioritised replay (Schaul et al. 2016).

Without weights the objective is E_q ℓ for the mixture q = (1 − α) p + α π: the hard states
(sharp dynamics, fast transients) count more. The exact solution makes every per-sample
residual zero, so any positive reweighting of the states keeps it as the minimiser; what moves
is where a finite network and a finite budget leave their error: away from the tail of hard
states that dominates a norm-relative error. With ``weighted`` a picked row carries
w_j = 1 / (P π_j) (a fresh row 1): each part of the batch is then an unbiased estimate of the
pool's mean loss, so the objective's expectation is the uniform one and only the variance of
its gradient changes (Katharopoulos & Fleuret 2018).
"""

from __future__ import annotations

from typing import Any

import torch

#: added to the run's seed for the pool's picks (the noise streams' offset is 0x5EED)
HARD_SEED_OFFSET = 0x4A2D

Batch = tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]


class HardStates:
    """A pool of ``pool`` recent collocation points; a fraction ``alpha`` of every batch is
    drawn from it in proportion to the points' last losses (``weighted``: with weights
    1 / (P π_j) that keep the objective's expectation uniform).

    Mixing starts once the pool is full; until then the batches are the stream's own.
    """

    def __init__(self, alpha: float, pool: int, seed: int, weighted: bool = False) -> None:
        self.alpha, self.size, self.weighted = float(alpha), int(pool), bool(weighted)
        self.generator = torch.Generator().manual_seed(seed + HARD_SEED_OFFSET)
        self.z: torch.Tensor | None = None
        self.idx: tuple[torch.Tensor, ...] = ()
        self.cond: torch.Tensor | None = None
        self.score = torch.zeros(self.size, dtype=torch.float64)
        self.filled = 0  # points in the pool
        self.head = 0  # where the next fresh point goes (a ring)
        self._pending: tuple[Batch, torch.Tensor, int] | None = None

    # ------------------------------------------------------------ the step
    def mix(self, z: torch.Tensor, idx: tuple[torch.Tensor, ...], cond: torch.Tensor | None):
        """The batch to train on: the first B − h rows of the stream's batch and h = round(α B)
        pool points; returns (z, idx, cond, weights or None)."""
        B = z.shape[0]
        h = round(self.alpha * B) if self.filled == self.size else 0
        h = min(h, B - 1)  # at least one fresh row a step, so the pool keeps moving
        m = B - h
        fresh = (z[:m], tuple(t[:m] for t in idx), None if cond is None else cond[:m])
        pick = torch.empty(0, dtype=torch.long)
        if h > 0:
            pick = torch.multinomial(self.score, h, replacement=True, generator=self.generator)
        self._pending = (fresh, pick, m)
        if h == 0:
            return (*fresh, None)
        assert self.z is not None
        at = pick.to(self.z.device)
        z = torch.cat([fresh[0], self.z[at]])
        idx = tuple(
            torch.cat([a, b[at.to(b.device)]]) for a, b in zip(fresh[1], self.idx, strict=True)
        )
        if cond is not None:
            assert self.cond is not None
            cond = torch.cat([fresh[2], self.cond[at.to(self.cond.device)]])
        w = None
        if self.weighted:
            pi = self.score[pick] / self.score.sum()
            w = torch.cat([torch.ones(m, dtype=torch.float64), 1.0 / (self.size * pi)])
            w = w.to(device=z.device, dtype=torch.float32)
        return z, idx, cond, w

    @torch.no_grad()
    def observe(self, losses: torch.Tensor) -> None:
        """Take the step's per-sample losses (B,), in the order ``mix`` returned the rows: the
        fresh rows enter the pool with theirs, the picked points' losses are refreshed."""
        assert self._pending is not None, "observe() follows mix()"
        (z, idx, cond), pick, m = self._pending
        self._pending = None
        ell = losses.detach().double().cpu().clamp_min(1e-30)
        if pick.numel():  # a point picked twice takes the mean of its two losses
            total = torch.zeros_like(self.score).index_add_(0, pick, ell[m:])
            count = torch.zeros_like(self.score).index_add_(0, pick, torch.ones_like(ell[m:]))
            hit = count > 0
            self.score[hit] = total[hit] / count[hit]
        self._insert(z, idx, cond, ell[:m])

    def _insert(self, z, idx, cond, ell: torch.Tensor) -> None:
        if self.z is None:  # the pool takes the shapes, dtypes and device of the first batch
            self.z = z.new_zeros((self.size, *z.shape[1:]))
            self.idx = tuple(t.new_zeros((self.size, *t.shape[1:])) for t in idx)
            self.cond = None if cond is None else cond.new_zeros((self.size, *cond.shape[1:]))
        at = (self.head + torch.arange(z.shape[0])) % self.size
        self.z[at.to(self.z.device)] = z
        for store, t in zip(self.idx, idx, strict=True):
            store[at.to(store.device)] = t
        if self.cond is not None:
            self.cond[at.to(self.cond.device)] = cond
        self.score[at] = ell
        self.head = int((self.head + z.shape[0]) % self.size)
        self.filled = min(self.size, self.filled + z.shape[0])

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "z": self.z,
            "idx": list(self.idx),
            "cond": self.cond,
            "score": self.score.clone(),
            "filled": self.filled,
            "head": self.head,
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.generator.set_state(state["generator"].cpu())
        self.z = None if state["z"] is None else state["z"].to(device)
        self.idx = tuple(t.to(device) for t in state["idx"])
        self.cond = None if state["cond"] is None else state["cond"].to(device)
        self.score = state["score"].to(torch.float64).cpu().clone()
        self.filled, self.head = int(state["filled"]), int(state["head"])
