"""Part 3: time per training iteration, student evaluations per sample and peak step memory, as ratios to upwind."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import torch

from benchmarks.schemes.settings import REFERENCE, BenchSettings, log_default, scheme_names
from benchmarks.schemes.training import DIGITS, open_trainer, recipe, system_recipe
from odedistill import SCHEMES, Trainer

NET_LABELS = {
    "mlp": "MLP width {s.cost_mlp_width} depth {s.cost_mlp_depth}, 2-D ring teacher",
    "unet": "SmallUNet {s.cost_unet_channels} ch (1, 2), attention, 1x8x8 digits teacher",
    "ddpmpp": "DDPM++ CIFAR-10 SongUNet (55.7M), 3x32x32, 16-component mixture teacher",
}

#: EDM's CIFAR-10 DDPM++ network (Karras et al. 2022, App. F.2), dropout off for distillation
DDPMPP_CIFAR10 = dict(
    img_resolution=32,
    in_channels=3,
    out_channels=3,
    augment_dim=9,
    model_channels=128,
    channel_mult=(2, 2, 2),
    num_blocks=4,
    attn_resolutions=(16,),
    dropout=0.0,
    embedding_type="positional",
    channel_mult_noise=1,
    encoder_type="standard",
    decoder_type="standard",
    resample_filter=(1, 1),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _songunet_available() -> bool:
    try:
        from odedistill import SongUNet  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def cost_trainer(
    net: str, scheme: str, device: torch.device, s: BenchSettings
) -> Iterator[Trainer]:
    """A trainer for the cost measurements: 'mlp' (2-D ring), 'unet' (digits) or 'ddpmpp' (CIFAR)."""
    if net == "mlp":
        sections, _ = system_recipe("ring", s)
        student = {"net": "mlp", "width": s.cost_mlp_width, "depth": s.cost_mlp_depth}
        raw = recipe(sections, scheme, s.cost_N, "karras", student, s.cost_mlp_batch, 1e-4, 0)
        with open_trainer(raw, device) as trainer:
            yield trainer
        return
    if net == "unet":
        student = {"net": "unet", "channels": s.cost_unet_channels, "channel_mult": [1, 2]}
        raw = recipe(DIGITS, scheme, s.cost_N, "karras", student, s.cost_unet_batch, 1e-4, 0)
        with open_trainer(raw, device) as trainer:
            yield trainer
        return
    if net == "ddpmpp":
        with ddpmpp_trainer(scheme, device, s) as trainer:
            yield trainer
        return
    raise ValueError(f"unknown cost network {net!r}")


@contextmanager
def ddpmpp_trainer(scheme: str, device: torch.device, s: BenchSettings) -> Iterator[Trainer]:
    """Full DDPM++ student on 3x32x32 with a cheap exact teacher (16-component Gaussian mixture)."""
    from odedistill import GaussianMixtureDenoiser, ProbabilityFlowODE, SongUNet

    torch.manual_seed(s.seed)
    means = torch.rand(16, 3, 32, 32, dtype=torch.float64) * 2 - 1
    D = GaussianMixtureDenoiser(means, 0.05).to(device).eval().requires_grad_(False)
    system = ProbabilityFlowODE(D, (3, 32, 32))
    net = SongUNet(**DDPMPP_CIFAR10)
    raw = recipe({}, scheme, s.cost_N, "karras", {}, s.cost_ddpmpp_batch, 2e-4, s.seed)
    with open_trainer(raw, device, system=system, net=net) as trainer:
        yield trainer


def _step(trainer: Trainer) -> None:
    trainer.train_step()
    trainer.optimizer_step()


def _time_iterations(trainer: Trainer, iters: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        _step(trainer)
    _sync(device)
    return (time.perf_counter() - t0) / iters


def measured_evaluations(trainer: Trainer) -> float:
    """Samples through the student network in one training step, per sample of the batch."""
    seen = [0]

    def hook(module, args, output):
        seen[0] += args[0].shape[0]

    handle = trainer.session.model.net.register_forward_hook(hook)
    try:
        _step(trainer)
    finally:
        handle.remove()
    return seen[0] / trainer.cfg.train.batch


def step_peak_memory(trainer: Trainer, device: torch.device) -> tuple[float | None, str]:
    """Peak bytes allocated during one training step above what existed before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the torch profiler's memory timeline
    (every tensor allocation and free inside the step), whose maximum is the step's peak.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _step(trainer)
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base), "cuda max_memory_allocated"
    try:
        import logging

        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        logging.getLogger("torch.profiler").setLevel(logging.ERROR)
        with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof:
            _step(trainer)
        timeline = MemoryProfileTimeline(prof._memory_profile())
        _, sizes = timeline._coalesce_timeline(torch.device("cpu"))
        totals = np.asarray(sizes, dtype=np.float64).sum(axis=1)
        return float(totals.max() - totals[0]), "torch.profiler memory timeline (CPU)"
    except Exception as e:  # private profiler API: report, do not fail the benchmark
        return None, f"unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


@contextmanager
def open_all(net: str, device: torch.device, s: BenchSettings) -> Iterator[dict[str, Trainer]]:
    """One trainer per scheme for ``net``, all alive at once (so timing rounds can interleave)."""
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(cost_trainer(net, name, device, s)) for name in scheme_names()
        }


def scheme_cost(
    settings: BenchSettings, device: torch.device, log: Callable[[str], None] = log_default
) -> dict[str, Any]:
    """Part 3: time per iteration, evaluations per sample and peak step memory, as ratios to upwind."""
    names = scheme_names()
    nets = ["mlp", "unet"]
    skipped: dict[str, str] = {}
    if device.type == "cuda" and _songunet_available():
        nets.append("ddpmpp")
    else:
        skipped["ddpmpp"] = (
            "needs --device cuda" if device.type != "cuda" else "odedistill.teachers.networks"
        )
    s = settings
    out: dict[str, Any] = {
        "timing": (
            f"median over {s.cost_repeats} interleaved rounds of {s.cost_iters} iterations "
            f"(after {s.cost_warmup} warm-up), forward + backward + optimiser step, teacher included"
        ),
        "N": s.cost_N,
        "nets": {},
        "skipped": skipped,
    }
    for net in nets:
        with open_all(net, device, s) as trainers:
            first = trainers[REFERENCE]
            params = sum(p.numel() for p in first.session.model.parameters())
            batch = first.cfg.train.batch
            evals, memory, method = {}, {}, ""
            for name, tr in trainers.items():
                for _ in range(s.cost_warmup):
                    _step(tr)
                evals[name] = measured_evaluations(tr)
                if s.cost_memory:
                    memory[name], method = step_peak_memory(tr, device)
                else:  # starting torch's CPU profiler alone can take a minute
                    memory[name], method = None, "not measured (cost_memory off)"
            times: dict[str, list[float]] = {name: [] for name in trainers}
            for r in range(s.cost_repeats):  # interleave, rotating who goes first
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    times[name].append(_time_iterations(trainers[name], s.cost_iters, device))
        med = {name: statistics.median(v) for name, v in times.items()}
        rows = {}
        for name in names:
            mem, mem0 = memory[name], memory[REFERENCE]
            rows[name] = {
                "ms_per_iteration": 1e3 * med[name],
                "ms_rounds": [1e3 * v for v in times[name]],
                "time_ratio": med[name] / med[REFERENCE],
                "evaluations_declared": SCHEMES.get(name).evaluations,
                "evaluations_measured": evals[name],
                "peak_step_memory_mib": None if mem is None else mem / 2**20,
                "memory_ratio": None if mem is None or not mem0 else mem / mem0,
            }
        out["nets"][net] = {
            "label": NET_LABELS[net].format(s=s),
            "parameters": params,
            "batch": batch,
            "memory_method": method,
            "schemes": rows,
        }
        log(
            f"  cost {net}: "
            + ", ".join(
                f"{n} {rows[n]['ms_per_iteration']:.1f} ms (x{rows[n]['time_ratio']:.2f})"
                for n in names
            )
        )
    return out
