"""Sampling by seed as EDM's generate.py does it: one generator per seed, batches, torchrun shards."""

from __future__ import annotations

import abc
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from odedistill._io import atomic_write_bytes
from odedistill.errors import UserError
from odedistill.evaluation import plots
from odedistill.evaluation.fid import to_uint8
from odedistill.models.base import TrajectoryModel
from odedistill.solvers import edm_sampler
from odedistill.systems.base import ODESystem
from odedistill.systems.probability_flow import ProbabilityFlowODE
from odedistill.training.checkpoint import latest_checkpoint, load_checkpoint
from odedistill.training.config import from_dict
from odedistill.training.distributed import DistEnv
from odedistill.training.loop import Session, build_session

# ---------------------------------------------------------------------------------------------
# Seeds and per-seed noise.

_RANGE = re.compile(r"^([0-9]+)-([0-9]+)$")
_NUMBER = re.compile(r"^[0-9]+$")


def parse_seeds(spec: str) -> list[int]:
    """'0-49999' or '0,5,10-19' as a list of seeds (EDM's ``parse_int_list``, ranges inclusive).

    A seed given twice is an error: every seed names exactly one image.
    """
    seeds: list[int] = []
    for part in str(spec).replace(" ", "").split(","):
        m = _RANGE.match(part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise UserError(f"seed range {part} runs backwards; write {hi}-{lo}")
            seeds.extend(range(lo, hi + 1))
        elif _NUMBER.match(part):
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


# ---------------------------------------------------------------------------------------------
# Samplers: per-seed noise in, samples out.


@dataclass
class Samples:
    """A batch of samples: ``x`` (B, *state_shape), the initial states ``z`` and class indices."""

    x: torch.Tensor
    z: torch.Tensor
    labels: torch.Tensor | None


def _draw_labels(
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


def _module_device(module: nn.Module) -> torch.device:
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return torch.device("cpu")


class StudentSampler(SeedSampler):
    """One-step samples x_θ(z, t_end) of a trained student.

    For the probability-flow ODE z = T·n with n the seed's unit latents, the noise EDM's
    generate.py gives a teacher of the same shape; images are clamped to [−1, 1]. Other systems
    draw z with their own ``sample_initial`` from the seed's (CPU) generator.
    """

    def __init__(self, model: TrajectoryModel, system: ODESystem) -> None:
        self.model = model
        self.system = system
        self.state_shape = tuple(system.state_shape)
        self.label_dim = int(system.label_dim)
        self.device = _module_device(model)
        self.description = "student, 1 step"

    @property
    def noise_device(self) -> torch.device:
        return self.device if isinstance(self.system, ProbabilityFlowODE) else torch.device("cpu")

    @torch.no_grad()
    def sample(self, rnd: SeedNoise, class_idx: int | None = None) -> Samples:
        system = self.system
        if isinstance(system, ProbabilityFlowODE):
            z = rnd.randn(self.state_shape) * system.t_start
        else:
            z = torch.cat([system.sample_initial(1, g) for g in rnd.generators])
        cond, idx = _draw_labels(rnd, self.label_dim, class_idx)
        was_training = self.model.training
        self.model.eval()
        try:
            x = self.model.sample(z.to(self.device), None if cond is None else cond.to(self.device))
        finally:
            self.model.train(was_training)
        if system.is_image:
            x = x.clamp(-1, 1)
        return Samples(x.cpu(), z.cpu(), None if idx is None else idx.cpu())


class TeacherSampler(SeedSampler):
    """EDM Algorithm 2 (Heun, churn, NFE = 2N − 1) on a denoiser D(x, σ, class_labels).

    As EDM's generate.py: latents are the seed's unit normal noise (B, C, H, W), labels are
    drawn from the seed, σ_min and σ_max are clipped to the network's own range, and the
    images are the float64 result of the sampler. The denoiser needs ``img_channels`` and
    ``img_resolution`` (EDM's preconditioners) or a ``state_shape``; ``label_dim`` defaults to 0.
    EDM's preconditioners cast their input to float32 (fp16 inside where the network asks for
    it), so an EDM network is called with float32 x and σ here too, its output read back as
    float64; other denoisers (the exact Gaussian mixture) get the sampler's float64 states.
    """

    def __init__(
        self,
        net: nn.Module,
        num_steps: int = 18,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        S_churn: float = 0.0,
        S_min: float = 0.0,
        S_max: float = float("inf"),
        S_noise: float = 1.0,
    ) -> None:
        if hasattr(net, "img_channels") and hasattr(net, "img_resolution"):
            r = int(net.img_resolution)
            shape: tuple[int, ...] = (int(net.img_channels), r, r)
        elif hasattr(net, "state_shape"):
            shape = tuple(net.state_shape)
        else:
            raise UserError(
                f"{type(net).__name__} has no img_channels/img_resolution or state_shape; "
                "cannot tell the shape of its samples"
            )
        if num_steps < 1:
            raise UserError(f"--steps must be at least 1, got {num_steps}")
        self.net = net
        self.state_shape = shape
        self.label_dim = int(getattr(net, "label_dim", 0) or 0)
        self.device = _module_device(net)
        self.float32 = hasattr(net, "img_resolution")
        self.num_steps = num_steps
        self.sigma_min = max(sigma_min, float(getattr(net, "sigma_min", 0.0)))
        self.sigma_max = min(sigma_max, float(getattr(net, "sigma_max", float("inf"))))
        if not 0 < self.sigma_min < self.sigma_max:
            raise UserError(
                f"need 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}"
            )
        self.rho = rho
        self.S_churn, self.S_min, self.S_max, self.S_noise = S_churn, S_min, S_max, S_noise
        nfe = 2 * num_steps - 1
        self.description = f"teacher, Heun {num_steps} steps ({nfe} NFE)"

    def _float32_net(
        self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.net(x.float(), sigma.float(), class_labels=class_labels)

    def _run(
        self, latents: torch.Tensor, labels: torch.Tensor | None, **noise: Any
    ) -> torch.Tensor:
        return edm_sampler(
            self._float32_net if self.float32 else self.net,
            latents.to(self.device),
            None if labels is None else labels.to(self.device),
            num_steps=self.num_steps,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            rho=self.rho,
            S_churn=self.S_churn,
            S_min=self.S_min,
            S_max=self.S_max,
            S_noise=self.S_noise,
            **noise,
        )

    @torch.no_grad()
    def sample(self, rnd: SeedNoise, class_idx: int | None = None) -> Samples:
        latents = rnd.randn(self.state_shape)
        cond, idx = _draw_labels(rnd, self.label_dim, class_idx)
        # churn noise comes from each image's own generator, at every step, as in EDM
        x = self._run(latents, cond, randn_like=rnd.randn_like if self.S_churn > 0 else None)
        z = latents.double() * self.sigma_max
        return Samples(x.cpu(), z.cpu(), None if idx is None else idx.cpu())


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


# ---------------------------------------------------------------------------------------------
# Students from checkpoints.


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its newest checkpoint) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise UserError(
                f"{path} holds no checkpoint; give a run directory with checkpoints/ "
                "or a .pt checkpoint file"
            )
        return ckpt
    if not path.is_file():
        raise UserError(f"no run directory or checkpoint at {path}")
    return path


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint's contents; a file that is not one is a ``UserError``."""
    state = load_checkpoint(path, map_location=device)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise UserError(f"{path} is not an odedistill training checkpoint")
    return state


def session_of(
    state: dict[str, Any], device: str | torch.device = "cpu", where: str = ""
) -> Session:
    """Rebuild the run (system, student, EMAs) a checkpoint was saved from, on ``device``."""
    cfg = from_dict(json.loads(state["config"]), source=f"{where} (saved config)")
    return build_session(cfg, torch.device(device))


def weight_names(state: dict[str, Any], spec: str) -> list[str]:
    """Names ('raw', 'ema0.999', ...) of the weights ``spec`` picks from a checkpoint.

    ``spec`` is a comma list of 'raw', 'ema' (the first rate), a rate ('0.999' or 'ema0.999')
    or 'all' (every EMA and the raw weights).
    """
    emas = list(state.get("ema", {}))
    names: list[str] = []
    for item in str(spec).replace(" ", "").split(","):
        if item == "all":
            picked = ["raw", *(f"ema{k}" for k in emas)]
        elif item == "raw":
            picked = ["raw"]
        elif item == "ema":
            if not emas:
                raise UserError("the run kept no EMA; use --weights raw")
            picked = [f"ema{emas[0]}"]
        else:
            try:
                key = repr(float(item.removeprefix("ema")))
            except ValueError:
                raise UserError(
                    f"--weights expects 'ema', 'raw', 'all' or an EMA rate, got {item!r}"
                ) from None
            if key not in emas:
                have = ", ".join(emas) if emas else "none"
                raise UserError(f"no EMA with rate {item} in the checkpoint; it has {have}")
            picked = [f"ema{key}"]
        names += [n for n in picked if n not in names]
    return names


def load_weights(model: nn.Module, state: dict[str, Any], name: str) -> nn.Module:
    """Load the weights ``name`` (from ``weight_names``) of a checkpoint into ``model``."""
    model.load_state_dict(state["model"] if name == "raw" else state["ema"][name[3:]])
    return model.eval().requires_grad_(False)


def load_student(
    path: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
) -> tuple[TrajectoryModel, ODESystem]:
    """The student of a run and its system. ``weights``: 'ema' (first rate), 'raw' or a rate."""
    ckpt = resolve_checkpoint(path)
    state = read_checkpoint(ckpt, device)
    names = weight_names(state, weights)
    if len(names) != 1:
        raise UserError(f"--weights {weights!r} names {len(names)} sets of weights; pick one")
    session = session_of(state, device, str(ckpt))
    return load_weights(session.model, state, names[0]), session.system


# ---------------------------------------------------------------------------------------------
# torchrun (the process group itself: odedistill.training.distributed).


def shard_seeds(seeds: Sequence[int], env: DistEnv) -> list[int]:
    """This rank's seeds: ``seeds[rank::world_size]``, every seed on exactly one rank."""
    return list(seeds)[env.rank :: env.world_size]


def _barrier(env: DistEnv) -> None:
    """Wait for the ranks of ``env`` (nothing for one process, even inside a larger group)."""
    if env.world_size > 1:
        torch.distributed.barrier()


# ---------------------------------------------------------------------------------------------
# Writing samples.


def png_path(out: str | Path, seed: int, subdirs: bool = False) -> Path:
    """EDM's file of a seed: ``out/{seed:06d}.png``, or ``out/{seed - seed % 1000:06d}/...``."""
    out = Path(out)
    folder = out / f"{seed - seed % 1000:06d}" if subdirs else out
    return folder / f"{seed:06d}.png"


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, C) image as 'L' (C = 1) or 'RGB' (C = 3) PNG, atomically."""
    import PIL.Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pil = (
        PIL.Image.fromarray(image[:, :, 0], "L")
        if image.shape[2] == 1
        else PIL.Image.fromarray(image, "RGB")
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pil.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def output_kind(out: str | Path, sampler: SeedSampler) -> str:
    """'dir' (one PNG per seed), 'npz' or 'png' (one picture); bad combinations are errors."""
    out = Path(out)
    if out.suffix == ".npz":
        return "npz"
    if out.suffix == ".png":
        if not sampler.is_image and math.prod(sampler.state_shape) != 2:
            raise UserError(
                f"a picture needs 2-D or image states, not {sampler.state_shape}; use .npz"
            )
        return "png"
    if out.suffix and not out.is_dir():
        raise UserError(
            f"unknown output type {out.suffix!r}; use a folder (one PNG per seed), .npz or .png"
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for one PNG per seed")
    if not sampler.is_image:
        raise UserError(
            f"one PNG per seed needs image states, not {sampler.state_shape}; use .npz or .png"
        )
    return "dir"


def _arrays(seeds: list[int], s: Samples, is_image: bool) -> dict[str, np.ndarray]:
    out = {"seeds": np.asarray(seeds, dtype=np.int64)}
    if is_image:
        out["images"] = to_uint8(s.x).permute(0, 2, 3, 1).numpy()  # NHWC, as EDM's PNGs
    else:
        out["samples"] = s.x.float().numpy()
        out["z"] = s.z.float().numpy()
    if s.labels is not None:
        out["labels"] = s.labels.numpy().astype(np.int64)
    return out


def _concat(
    parts: list[dict[str, np.ndarray]], template: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    if not parts:
        return {k: np.zeros((0, *v.shape[1:]), v.dtype) for k, v in template.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def _template(sampler: SeedSampler) -> dict[str, np.ndarray]:
    """Empty arrays of the right shapes, for a rank that drew no seed."""
    out = {"seeds": np.zeros(0, np.int64)}
    if sampler.is_image:
        c, h, w = sampler.state_shape
        out["images"] = np.zeros((0, h, w, c), np.uint8)
    else:
        out["samples"] = np.zeros((0, *sampler.state_shape), np.float32)
        out["z"] = np.zeros((0, *sampler.state_shape), np.float32)
    if sampler.label_dim:
        out["labels"] = np.zeros(0, np.int64)
    return out


def _gather_on_main(
    out: Path, arrays: dict[str, np.ndarray], dist: DistEnv
) -> dict[str, np.ndarray] | None:
    """Every rank writes its shard beside ``out``; rank 0 reads them all back (then deletes them)."""
    shard = out.with_name(f".{out.name}.shard{dist.rank}of{dist.world_size}.npz")
    _savez(shard, arrays)
    _barrier(dist)
    merged = None
    if dist.is_main:
        paths = [
            out.with_name(f".{out.name}.shard{r}of{dist.world_size}.npz")
            for r in range(dist.world_size)
        ]
        parts = []
        for p in paths:
            with np.load(p, allow_pickle=False) as z:
                parts.append({k: z[k] for k in z.files})
        merged = _concat(parts, arrays)
        for p in paths:
            p.unlink(missing_ok=True)
    return merged


def _progress(enabled: bool, description: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def sample_to(
    out: str | Path,
    sampler: SeedSampler,
    seeds: Sequence[int],
    *,
    batch: int = 64,
    class_idx: int | None = None,
    subdirs: bool = False,
    progress: bool = True,
    dist: DistEnv | None = None,
) -> Path:
    """Sample ``seeds`` and write them to ``out``; under torchrun each rank draws its shard.

    ``out`` is a folder (one PNG per seed, EDM's names, written by the rank that drew it), an
    ``.npz`` (``images`` uint8 NHWC for images, else ``samples`` and ``z``; with ``seeds`` and,
    for conditional models, ``labels``, in the order of ``seeds``) or a ``.png`` picture
    (a grid of images, or a scatter of 2-D states).
    """
    dist = dist or DistEnv()
    out = Path(out)
    seeds = list(seeds)
    if not seeds:
        raise UserError("no seeds to sample")
    kind = output_kind(out, sampler)
    sampler.check_class(class_idx)
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    mine = shard_seeds(seeds, dist)
    where = f" (rank 0 of {dist.world_size})" if dist.world_size > 1 else ""
    parts: list[dict[str, np.ndarray]] = []
    if kind == "dir":
        out.mkdir(parents=True, exist_ok=True)
    with _progress(progress and dist.is_main, f"sampling{where}") as bar:
        task = bar.add_task("sampling", total=len(mine))
        for chunk, s in generate(sampler, mine, batch, class_idx):
            arrays = _arrays(chunk, s, sampler.is_image)
            if kind == "dir":
                for seed, image in zip(chunk, arrays["images"], strict=True):
                    write_png(png_path(out, seed, subdirs), image)
            else:
                parts.append(arrays)
            bar.advance(task, len(chunk))
    if kind == "dir":
        _barrier(dist)
        return out
    template = parts[0] if parts else _template(sampler)
    merged = _concat(parts, template)
    if dist.world_size > 1:
        merged = _gather_on_main(out, merged, dist)
    if dist.is_main:
        assert merged is not None
        position = {seed: i for i, seed in enumerate(seeds)}
        perm = np.argsort([position[int(s)] for s in merged["seeds"]], kind="stable")
        merged = {k: v[perm] for k, v in merged.items()}
        _write_collected(out, kind, merged, sampler)
    _barrier(dist)
    return out


def _write_collected(
    out: Path, kind: str, arrays: dict[str, np.ndarray], sampler: SeedSampler
) -> Path:
    if kind == "npz":
        return _savez(out, arrays)
    if sampler.is_image:
        # Back to [-1, 1]: to_uint8((u - 127.5) / 127.5) = trunc(u + 0.5) = u, the same pixels.
        x = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).double()
        x = (x - 127.5) / 127.5
        scale = 4 if x.shape[-1] <= 16 else 1
        return plots.save_image_grid(x, out, scale=scale)
    x = torch.from_numpy(arrays["samples"]).reshape(-1, 2)
    return plots.plot_2d({sampler.description: x}, out)


__all__ = [
    "SeedNoise",
    "SeedSampler",
    "Samples",
    "StudentSampler",
    "TeacherSampler",
    "format_seeds",
    "generate",
    "load_student",
    "parse_seeds",
    "png_path",
    "sample_to",
    "shard_seeds",
    "weight_names",
]
