"""Data-parallel training under torchrun: the process group from WORLD_SIZE, RANK and LOCAL_RANK.

One process (WORLD_SIZE unset or 1) needs nothing from here: every helper is then the
identity. Under ``torchrun --nproc_per_node K -m odedistill run RECIPE`` each process joins
the group (nccl on CUDA, gloo on the CPU), trains on ``batch / K`` samples per step through
``DistributedDataParallel`` and draws them from its own noise stream (seed + rank); only
rank 0 writes logs, checkpoints and samples.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from odedistill.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the group: rank, world size and local rank (GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_rank() -> int:
    """RANK from the environment (0 when unset), readable before the group exists."""
    return int(os.environ.get("RANK", "0") or 0)


def current() -> DistEnv:
    """The group this process belongs to, or a single-process ``DistEnv``."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistEnv()
    rank, world = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def init_from_env(
    device: torch.device, timeout_minutes: float = 30.0
) -> tuple[DistEnv, torch.device, bool]:
    """Join torchrun's process group when WORLD_SIZE > 1.

    Reads WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (torchrun sets them all).
    CUDA processes use ``cuda:LOCAL_RANK`` and nccl; CPU processes use gloo. A group that
    already exists is reused.

    Returns:
        (the group, this process's device, whether this call created the group).
    """
    if dist.is_available() and dist.is_initialized():
        env = current()
        if device.type == "cuda":
            device = torch.device("cuda", env.local_rank)
        return env, device, False
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistEnv(), device, False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise UserError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set; start the run with torchrun"
        )
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPUs; "
                "use --nproc_per_node <= the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method="env://",
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    return DistEnv(rank, world, local_rank), device, True


def shutdown() -> None:
    """Leave the process group, if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` for one process)."""
    env = current()
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The average of a tensor over all ranks (``x`` itself for one process)."""
    env = current()
    if not env.enabled:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / env.world_size


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def any_over_ranks(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (``flag`` itself for one process)."""
    env = current()
    if not env.enabled:
        return flag
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
