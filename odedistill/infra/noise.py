"""The noise of a training run: one generator stream per process, drawn in order and saved in checkpoints.

Stream r belongs to rank r and is seeded with ``seed + NOISE_SEED_OFFSET + r``, so the batch a
group of processes draws together is fixed by the seed and the world size alone. A process
may own several streams (``NoiseStreams(seed, streams=[0, 1], world=2)`` draws what two ranks
draw, concatenated): that is how tests compare one process with a process group.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from odedistill.errors import UserError
from odedistill.infra import distributed
from odedistill.infra.hard_states import HardStates
from odedistill.kinds.base import Indices
from odedistill.systems.base import ODESystem

NOISE_SEED_OFFSET = 0x5EED


def noise_generator(seed: int, stream: int = 0) -> torch.Generator:
    """The noise stream ``stream`` of a run (stream r is what rank r draws from)."""
    return torch.Generator().manual_seed(seed + NOISE_SEED_OFFSET + stream)


def draw_batch(
    system: ODESystem,
    N: int,
    batch: int,
    gen: torch.Generator,
    device: torch.device,
    indices: Indices,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
    """z, the objective's collocation indices (as the student kind draws them) and the
    conditions, from one noise stream."""
    z = system.sample_initial(batch, gen)
    idx = indices(N, batch, gen)
    cond = system.sample_condition(batch, gen)
    return (
        z.to(device),
        tuple(t.to(device) for t in idx),
        None if cond is None else cond.to(device),
    )


class NoiseStreams:
    """The streams one process draws its share of every batch from.

    Args:
        seed: the run's seed.
        streams: the streams this process owns (``[rank]`` under torchrun).
        world: how many streams the whole run draws from (the number of processes).
        batch: the global batch; it must split evenly over the ``world`` streams.
        hard: hard-state replay (``train.hard_states``) mixed into this process's batches,
            or None (the batches are the streams' draws).
    """

    def __init__(
        self,
        seed: int,
        streams: Sequence[int],
        world: int,
        batch: int,
        hard: HardStates | None = None,
    ) -> None:
        if batch % world:
            raise UserError(
                f"'train.batch' = {batch} does not split over {world} processes; use a "
                f"multiple of {world}"
            )
        self.seed = seed
        self.streams = list(streams)
        self.world = world
        self.per_stream = batch // world
        self.generators = [noise_generator(seed, r) for r in self.streams]
        self.hard = hard

    def draw(
        self, system: ODESystem, N: int, device: torch.device, indices: Indices
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        """This process's share of one batch: its streams' draws, concatenated in stream order."""
        parts = [
            draw_batch(system, N, self.per_stream, g, device, indices) for g in self.generators
        ]
        if len(parts) == 1:
            return parts[0]
        z, idx, cond = zip(*parts, strict=True)
        return (
            torch.cat(z),
            tuple(torch.cat(col) for col in zip(*idx, strict=True)),
            None if cond[0] is None else torch.cat(cond),
        )

    def draw_weighted(
        self, system: ODESystem, N: int, device: torch.device, indices: Indices
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None, torch.Tensor | None]:
        """``draw``'s batch with hard states mixed in, and the per-row loss weights (None: 1)."""
        z, idx, cond = self.draw(system, N, device, indices)
        if self.hard is None:
            return z, idx, cond, None
        return self.hard.mix(z, idx, cond)

    def observe(self, losses: torch.Tensor) -> None:
        """The per-sample losses of the batch ``draw_weighted`` gave (for the hard states)."""
        if self.hard is not None:
            self.hard.observe(losses)

    def states(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def restore(self, saved: Sequence[torch.Tensor], step: int) -> None:
        """Continue from the streams of a checkpoint (every stream of the run, in rank order).

        A checkpoint from a different number of streams cannot be continued exactly: the
        streams then restart from seeds that depend on ``step``, with a warning.
        """
        if len(saved) == self.world:
            for gen, stream in zip(self.generators, self.streams, strict=True):
                gen.set_state(saved[stream].cpu())
            return
        warnings.warn(
            f"the checkpoint holds {len(saved)} noise streams but this run draws {self.world}; "
            "the streams restart from seeds that depend on the step, so the resumed run "
            "is not bit-identical to an uninterrupted one",
            stacklevel=2,
        )
        for gen, stream in zip(self.generators, self.streams, strict=True):
            gen.manual_seed(self.seed + NOISE_SEED_OFFSET + stream + 7919 * step)

    def __repr__(self) -> str:
        info: dict[str, Any] = {"seed": self.seed, "streams": self.streams, "world": self.world}
        return f"NoiseStreams({info})"


# ------------------------------------------------------------------- saved with checkpoints
def capture_rng(noise: NoiseStreams, device: torch.device) -> dict[str, Any]:
    """Every random state a resumed run needs, of every process (all ranks must call this).

    ``torch`` (and ``cuda``) are this process's global states, ``noise_streams`` the run's
    streams in rank order; under torchrun ``ranks`` holds each rank's global states.
    """
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "noise": noise.generators[0].get_state()}
    if noise.hard is not None:
        rng["hard"] = noise.hard.state_dict()
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    env = distributed.current()
    if env.enabled:
        mine: dict[str, Any] = {"noise": noise.states(), "torch": torch.get_rng_state()}
        if noise.hard is not None:
            mine["hard"] = rng.pop("hard")
        if device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(device)
        gathered = distributed.all_gather_objects(mine)
        rng["noise_streams"] = [s for g in gathered for s in g["noise"]]
        rng["ranks"] = [{k: v for k, v in g.items() if k != "noise"} for g in gathered]
    else:
        rng["noise_streams"] = noise.states()
    return rng


def restore_rng(rng: dict[str, Any], noise: NoiseStreams, device: torch.device, step: int) -> None:
    """Put back what :func:`capture_rng` saved (each rank takes its own states)."""
    env = distributed.current()
    ranks = rng.get("ranks")
    if env.enabled and ranks is not None and len(ranks) == env.world_size:
        mine = ranks[env.rank]
        torch.set_rng_state(mine["torch"].cpu())
        if noise.hard is not None and "hard" in mine:
            noise.hard.load_state_dict(mine["hard"], device)
        if "cuda" in mine and device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"].cpu(), device)
    elif env.is_main:
        torch.set_rng_state(rng["torch"].cpu())
        if noise.hard is not None and "hard" in rng:
            noise.hard.load_state_dict(rng["hard"], device)
        if "cuda" in rng and torch.cuda.is_available():
            states = rng["cuda"]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([t.cpu() for t in states])
    noise.restore(rng.get("noise_streams") or [rng["noise"]], step)
