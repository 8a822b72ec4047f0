"""Train the learned digits teacher: EDM's denoising loss on a small DDPM++-style SongUNet.

EDM (Karras et al. 2022, sec. 5 and Table 1): y ~ data, ln σ ~ N(P_mean, P_std²),
loss = λ(σ) ‖D(y + σ n; σ) − y‖² with λ(σ) = (σ² + σ_d²) / (σ σ_d)², D the EDM-preconditioned
network. One thread, one seed, a fixed number of iterations: the written file is a function of
the code, the seed and the torch build.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from benchmarks.learned_teacher.data import train_and_heldout
from odedistill import (
    EDMPrecond,
    TeacherSampler,
    generate_samples,
    load_teacher,
    save_image_grid,
    save_teacher,
)

LICENCE = "odedistill's digits teacher, trained on scikit-learn's digits; MIT like the project"


def weights_sha256(path: Path) -> str:
    """SHA-256 of a teacher file's tensors (names, dtypes, shapes and bytes, in name order):
    equal for equal weights, whatever order the file's metadata was written in."""
    h = hashlib.sha256()
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k).contiguous()
            h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class TeacherSettings:
    """The network (EDMPrecond around a DDPM++-style SongUNet at 8x8) and its training."""

    seed: int = 0
    iterations: int = 4000
    batch: int = 128
    lr: float = 1e-3
    warmup: int = 200
    ema: float = 0.999
    P_mean: float = -1.2
    P_std: float = 1.2
    sigma_data: float = 0.5
    network: dict[str, Any] = field(
        default_factory=lambda: dict(
            img_resolution=8,
            img_channels=1,
            label_dim=0,
            sigma_data=0.5,
            model_type="SongUNet",
            embedding_type="positional",
            encoder_type="standard",
            decoder_type="standard",
            channel_mult_noise=1,
            resample_filter=[1, 1],
            model_channels=16,
            channel_mult=[1, 2],
            num_blocks=2,
            attn_resolutions=[4],
            augment_dim=0,
            dropout=0.0,
        )
    )


def edm_loss(
    D: torch.nn.Module, y: torch.Tensor, settings: TeacherSettings, gen: torch.Generator
) -> torch.Tensor:
    """EDM's loss: mean of λ(σ)‖D(y + σn; σ) − y‖², ln σ ~ N(P_mean, P_std²)."""
    s = settings
    rnd = torch.randn(y.shape[0], generator=gen)
    sigma = (rnd * s.P_std + s.P_mean).exp()
    weight = (sigma**2 + s.sigma_data**2) / (sigma * s.sigma_data) ** 2
    n = torch.randn(y.shape, generator=gen) * sigma.reshape(-1, 1, 1, 1)
    return (weight.reshape(-1, 1, 1, 1) * (D(y + n, sigma) - y) ** 2).mean()


def train_teacher(
    settings: TeacherSettings, out: Path, log=print, log_every: int = 500
) -> dict[str, Any]:
    """Train, then write the EMA weights as a teacher .safetensors at ``out``; returns a summary."""
    torch.set_num_threads(1)
    torch.manual_seed(settings.seed)
    (x_train, _), _ = train_and_heldout()
    D = EDMPrecond(**settings.network)
    ema = copy.deepcopy(D).eval().requires_grad_(False)
    opt = torch.optim.Adam(D.parameters(), lr=settings.lr)
    gen = torch.Generator().manual_seed(settings.seed)
    n = x_train.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    t0 = time.process_time()
    running = 0.0
    for step in range(settings.iterations):
        if pos + settings.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        y = x_train[perm[pos : pos + settings.batch]]
        pos += settings.batch
        for g in opt.param_groups:
            g["lr"] = settings.lr * min(1.0, (step + 1) / settings.warmup)
        loss = edm_loss(D, y, settings, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), D.parameters(), strict=True):
                pe.lerp_(p, 1 - settings.ema)
        running += loss.item()
        if (step + 1) % log_every == 0:
            log(
                f"step {step + 1}/{settings.iterations}: loss {running / log_every:.4f} "
                f"({time.process_time() - t0:.0f} CPU s)"
            )
            running = 0.0
    seconds = time.process_time() - t0
    kwargs = dict(settings.network)
    save_teacher(ema, out, kwargs, licence=LICENCE)
    return {
        "settings": asdict(settings),
        "cpu_seconds": seconds,
        "parameters": sum(p.numel() for p in D.parameters()),
        "file": str(out),
    }


def teacher_samples_png(path: Path, out: Path, steps: int = 18, n: int = 64) -> Path:
    """EDM's sampler (Heun, ``steps`` steps, 2 steps − 1 evaluations) from seeds 0 … n − 1."""
    teacher = load_teacher(path)
    sampler = TeacherSampler(teacher, num_steps=steps)
    _, s = next(generate_samples(sampler, range(n), n))
    return save_image_grid(s.x.clamp(-1, 1), out, cols=8, scale=4)
