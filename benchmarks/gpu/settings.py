"""The GPU check's sizes and per-part wall-time budgets: the full run on one GPU, and the CPU dry run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: the parts, in the order they run (each in its own process, under its own wall-time cap);
#: compile last, as inductor's compilation time is the least certain: it gets what is left
PARTS = ("official", "schemes", "torchrun", "fid", "compile")

#: dense peak TFLOP/s assumed for MFU: NVIDIA's H100/H200 SXM datasheet (dense, no sparsity)
SPEC_PEAK_TFLOPS = {"bf16": 989.4, "fp32": 66.9, "tf32": 494.7}

#: the official code's network and loss as its CIFAR-10 script calls them
#: (scripts/distill_pid_diffusion.sh of pantheon5100/pid_diffusion)
OFFICIAL_CIFAR10 = dict(
    image_size=32,
    num_channels=128,
    num_res_blocks=4,
    channel_mult="",  # their default for 32 x 32: (2, 2, 2)
    attention_resolutions="2",  # image_size // 2 = 16
    num_scales=250,
)


@dataclass(frozen=True)
class Settings:
    """One preset of every size the check uses."""

    name: str
    device: str
    #: recipe overrides that shrink the networks (empty: EDM's full DDPM++)
    arch: tuple[str, ...] = ()
    #: the official network's shape (matching ``arch``)
    official: dict[str, Any] = field(default_factory=lambda: dict(OFFICIAL_CIFAR10))
    #: images per step on one GPU: the paper's global batch 512 over its 8 GPUs
    batch: int = 64
    #: untimed steps per configuration (cuBLAS/cuDNN set-up, the allocator, TorchScript's
    #: profiling runs of the official network's softmax)
    warmup: int = 3
    rounds: int = 6  # alternating rounds of timed steps
    steps: int = 3  # timed steps per configuration per round
    compile_backend: str = "inductor"  # torch.compile's backend (the recipe's train.compile)
    compile_precisions: tuple[str, ...] = ("bf16", "fp32")
    scheme_precision: str = "bf16"
    sdpa_shape: tuple[int, int, int, int] = (64, 1, 256, 256)  # DDPM++'s 16 x 16 attention
    torchrun_iterations: int = 200
    checkpoint_every: int = 100
    kill_at_step: int = 150  # SIGKILL once metrics.jsonl reaches this step
    torchrun_precision: str = "bf16"
    sample_images: int = 1000
    fid_images: int = 10_000
    fid_batch: int = 250
    #: the random Inception stand-in: input side and conv widths (5 stride-2 3x3 convs)
    detector_resolution: int = 299
    detector_widths: tuple[int, ...] = (32, 64, 192, 768, 2048)
    #: wall-time caps in seconds per part, and for the whole run
    budgets: dict[str, float] = field(
        default_factory=lambda: {
            "official": 80.0,
            "compile": 200.0,
            "schemes": 70.0,
            "torchrun": 150.0,
            "fid": 45.0,
        }
    )
    total_seconds: float = 480.0
    #: expected wall seconds per part on an H200, from FLOP counts and start-up costs (the
    #: inductor compilation is the least certain); recorded beside each part's cap
    estimates: dict[str, float] = field(
        default_factory=lambda: {
            "official": 50.0,
            "compile": 90.0,
            "schemes": 40.0,
            "torchrun": 110.0,
            "fid": 25.0,
        }
    )

    def with_device(self, device: str) -> Settings:
        return dataclasses.replace(self, device=device)


FULL = Settings(name="full", device="cuda")

#: toy sizes on the CPU: every step of the full run, in seconds
DRY_RUN = Settings(
    name="dry-run",
    device="cpu",
    arch=(
        "teacher.model_channels=16",
        "teacher.channel_mult=[1,2]",
        "teacher.num_blocks=1",
    ),
    official=dict(
        image_size=32,  # their builder has a network for 32 and 64 only
        num_channels=16,
        num_res_blocks=1,
        channel_mult="1,2",
        attention_resolutions="2",  # 32 // 2 = 16, as DDPM++
        num_scales=250,
    ),
    batch=4,
    warmup=1,
    rounds=2,
    steps=1,
    compile_backend="eager",  # dynamo's tracing without code generation: seconds on a CPU
    compile_precisions=("bf16",),
    sdpa_shape=(2, 1, 16, 8),
    torchrun_iterations=8,
    checkpoint_every=2,
    kill_at_step=3,
    sample_images=8,
    fid_images=64,
    fid_batch=32,
    detector_resolution=16,
    detector_widths=(4, 8),
    budgets={"official": 60.0, "compile": 60.0, "schemes": 60.0, "torchrun": 120.0, "fid": 60.0},
    total_seconds=400.0,
    estimates={"official": 4.0, "compile": 8.0, "schemes": 5.0, "torchrun": 20.0, "fid": 2.0},
)


def preset(dry_run: bool) -> Settings:
    return DRY_RUN if dry_run else FULL
