"""Writing samples by seed as EDM's generate.py does: a folder of PNGs, an .npz or one picture; torchrun shards."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from odedistill._io import atomic_write_bytes
from odedistill.errors import UserError
from odedistill.infra import pictures
from odedistill.infra.distributed import DistEnv
from odedistill.infra.pictures import to_uint8
from odedistill.infra.progress import progress_bar
from odedistill.infra.seeds import Samples, SeedSampler, generate, shard_seeds


def _barrier(env: DistEnv) -> None:
    """Wait for the ranks of ``env`` (nothing for one process, even inside a larger group)."""
    if env.world_size > 1:
        torch.distributed.barrier()


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
    with progress_bar(progress and dist.is_main) as bar:
        task = bar.add_task(f"sampling{where}", total=len(mine))
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
        return pictures.save_image_grid(x, out, scale=scale)
    x = torch.from_numpy(arrays["samples"]).reshape(-1, 2)
    return pictures.plot_2d({sampler.description: x}, out)
