"""Sampling by seed as EDM's generate.py does it: one generator per seed, the sampler interface, batches.

Shared by the ``sample`` command, FID evaluation and the samples of a training run: an image
depends on its seed only, not on the batch or the process that draws it.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from odedistill.errors import UserError
from odedistill.infra.distributed import DistEnv

# ---------------------------------------------------------------------------------------------
# Seeds and per-seed noise.

_RANGE = re.compile(r"^([0-9]+)-([0-9]+)$")
_NUMBER = re.compile(r"^[0-9]+$")


#: the most seeds one command draws (ten times EDM's 50,000-image protocol, and then some)
MAX_SEEDS = 10_000_000
#: seeds are 64-bit integers (EDM seeds its generators with seed mod 2**32)
MAX_SEED = 2**63 - 1


def parse_seeds(spec: str) -> list[int]:
    """'0-49999' or '0,5,10-19' as a list of seeds (EDM's ``parse_int_list``, ranges inclusive).

    A seed given twice is an error: every seed names exactly one image. At most ``MAX_SEEDS``
    seeds, each at most ``MAX_SEED``.
    """
    seeds: list[int] = []
    for part in str(spec).replace(" ", "").split(","):
        m = _RANGE.match(part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise UserError(f"seed range {part} runs backwards; write {hi}-{lo}")
            if hi > MAX_SEED or len(seeds) + hi - lo + 1 > MAX_SEEDS:
                raise UserError(
                    f"--seeds {spec!r} names too many seeds (at most {MAX_SEEDS:,}, each "
                    f"below 2^63); split the work into several commands"
                )
            seeds.extend(range(lo, hi + 1))
        elif _NUMBER.match(part):
            if int(part) > MAX_SEED:
                raise UserError(f"seed {part} is too large; seeds are below 2^63")
            seeds.append(int(part))
        else:
            raise UserError(
                f"--seeds expects non-negative numbers and ranges such as 0-49999 or "
                f"0,5,10-19, got {spec!r}"
            )
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {spec!r} names a seed more than once")
    return seeds


def format_seeds(seeds: Sequence[int]) -> str:
    """The shortest ``parse_seeds`` spelling of ``seeds``: [0, 1, 2, 5] -> '0-2,5'."""
    parts: list[str] = []
    k = 0
    while k < len(seeds):
        j = k
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[k]) if j == k else f"{seeds[k]}-{seeds[j]}")
        k = j + 1
    return ",".join(parts)


class SeedNoise:
    """One ``torch.Generator`` per seed, seeded with seed mod 2³² (EDM's StackedRandomGenerator).

    Each image's noise comes from its own generator, so an image depends on its seed only, not
    on the batch or the rank that draws it. Draws are made in EDM's order: latents, then the
    class label, then the sampler's churn noise. Generators live on ``device``, as in EDM, so a
    seed gives different noise on CPU and on CUDA.
    """

    def __init__(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.seeds = [int(s) for s in seeds]
        self.generators = [
            torch.Generator(self.device).manual_seed(s % (1 << 32)) for s in self.seeds
        ]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Unit normal noise (B, *shape), row b from generator b."""
        return torch.stack(
            [
                torch.randn(tuple(shape), generator=g, dtype=dtype, device=self.device)
                for g in self.generators
            ]
        )

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Unit normal noise shaped like the batch ``x``, on ``x``'s device."""
        return self.randn(x.shape[1:], dtype=x.dtype).to(x.device)

    def randint(self, high: int) -> torch.Tensor:
        """One integer in [0, high) per generator, (B,) int64."""
        return torch.stack(
            [torch.randint(high, (), generator=g, device=self.device) for g in self.generators]
        )


@dataclass
class Samples:
    """A batch of samples: ``x`` (B, *state_shape), the initial states ``z`` and class indices."""

    x: torch.Tensor
    z: torch.Tensor
    labels: torch.Tensor | None


def draw_labels(
    rnd: SeedNoise, label_dim: int, class_idx: int | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(one-hot, indices): drawn from the seeds as EDM does, or all ``class_idx`` if given."""
    if label_dim == 0:
        return None, None
    idx = rnd.randint(label_dim)  # drawn even with class_idx, so the noise stream is EDM's
    if class_idx is not None:
        idx = torch.full_like(idx, class_idx)
    return torch.eye(label_dim, device=rnd.device)[idx], idx


class SeedSampler(abc.ABC):
    """Turns per-seed noise into samples; ``generate`` drives any of these."""

    state_shape: tuple[int, ...]
    label_dim: int
    device: torch.device
    description: str

    @property
    def noise_device(self) -> torch.device:
        """Where the per-seed generators live."""
        return self.device

    @property
    def is_image(self) -> bool:
        return len(self.state_shape) == 3

    def check_class(self, class_idx: int | None) -> None:
        """Raise ``UserError`` unless ``class_idx`` is None or a class of a conditional model."""
        if class_idx is None:
            return
        if self.label_dim == 0:
            raise UserError("--class needs a class-conditional model; this one is unconditional")
        if not 0 <= class_idx < self.label_dim:
            raise UserError(f"--class must be in 0..{self.label_dim - 1}, got {class_idx}")

    @abc.abstractmethod
    def sample(self, rnd: SeedNoise, class_idx: int | None = None) -> Samples:
        """One sample per generator of ``rnd``, on the CPU."""


def generate(
    sampler: SeedSampler, seeds: Sequence[int], batch: int = 64, class_idx: int | None = None
) -> Iterator[tuple[list[int], Samples]]:
    """Yield ``(seeds, samples)`` for consecutive batches of at most ``batch`` seeds."""
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    sampler.check_class(class_idx)
    seeds = list(seeds)
    for k in range(0, len(seeds), batch):
        chunk = seeds[k : k + batch]
        yield chunk, sampler.sample(SeedNoise(chunk, sampler.noise_device), class_idx)


def shard_seeds(seeds: Sequence[int], env: DistEnv) -> list[int]:
    """This rank's seeds: ``seeds[rank::world_size]``, every seed on exactly one rank."""
    return list(seeds)[env.rank :: env.world_size]
