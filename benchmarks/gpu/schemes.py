"""Part 'schemes': the residual schemes and the flow map on the GPU, as cost ratios to upwind.

Every registered scheme (upwind, central, autodiff) trains DDPM++ CIFAR-10 through the
recipe, and the flow map trains through ``recipes/pid_cifar10_flowmap.toml``; all at the same
batch and precision, timed in alternating rounds in one process. The autodiff scheme's JVP runs
attention on PyTorch's math backend (``forward_ad_safe_attention``); the part asks each
scaled-dot-product-attention backend whether it has a forward-mode rule here, and times an
upwind step with attention forced onto the math backend, which prices that fallback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.gpu.measure import Deadline, PartLog, median, time_call
from benchmarks.gpu.settings import Settings
from benchmarks.gpu.steps import (
    CIFAR_FLOWMAP,
    Candidate,
    alternate,
    first_line,
    guarded,
    our_resident,
    our_step,
    our_trainer,
)

BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def sdpa_probe(device: torch.device, shape: tuple[int, ...], reps: int = 10) -> dict[str, Any]:
    """For each SDPA backend: does the forward run, does ``torch.func.jvp`` run, their times."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v, tq, tk, tv = (
        torch.randn(shape, device=device, dtype=dtype, generator=gen) for _ in range(6)
    )
    out: dict[str, Any] = {"shape": list(shape), "dtype": str(dtype)}
    for name in BACKENDS:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            out[name] = {"forward": "not in this PyTorch"}
            continue
        rec: dict[str, Any] = {}
        calls = {
            "forward": lambda: F.scaled_dot_product_attention(q, k, v),
            "jvp": lambda: torch.func.jvp(F.scaled_dot_product_attention, (q, k, v), (tq, tk, tv)),
        }
        for what, fn in calls.items():
            try:
                with sdpa_kernel(backend):
                    fn()
                    rec[what] = "ok"
                    rec[f"{what}_ms"] = 1e3 * median(time_call(fn, device) for _ in range(reps))
            except Exception as e:  # a backend refusing the call or the mode is the finding
                rec[what] = first_line(e)
        out[name] = rec
    return out


def _in_math_attention(step):
    def run() -> None:
        with sdpa_kernel(SDPBackend.MATH):
            step()

    return run


def part_schemes(settings: Settings, log: PartLog, dl: Deadline) -> None:
    from odedistill import SCHEMES

    device = torch.device(settings.device)
    log.put("sdpa", sdpa_probe(device, settings.sdpa_shape))
    tmp = Path(tempfile.mkdtemp(prefix="odedistill-gpu-"))
    precision = settings.scheme_precision
    cands: list[Candidate] = []
    failed: dict[str, str] = {}

    def add(name: str, build_args: tuple, math_attention: bool = False, **info: Any) -> None:
        trainer = guarded(failed, name, our_trainer, settings, *build_args)
        if trainer is None:
            return
        step = our_step(trainer)
        if math_attention:
            step = _in_math_attention(step)
        cands.append(
            Candidate(
                name,
                step,
                settings.batch,
                lambda: our_resident(trainer),
                info={"precision": precision, **info},
            )
        )

    for scheme in SCHEMES.names():
        over = (f"scheme.kind={scheme}",)
        add(scheme, (tmp / scheme, precision, over), scheme=scheme)
    add(
        "upwind, math attention",
        (tmp / "upwind_math", precision),
        math_attention=True,
        scheme="upwind",
    )
    add(
        "flow map (upwind)",
        (tmp / "flowmap", precision, (), CIFAR_FLOWMAP),
        scheme="upwind",
        student="flowmap",
    )
    res = alternate(cands, settings, device, dl, log, "configs", failed)
    up = res.get("upwind", {}).get("seconds_per_iteration")
    ratios = {}
    for name, r in res.items():
        if up and r.get("seconds_per_iteration"):
            ratios[name] = r["seconds_per_iteration"] / up
    log.put("cost_ratio_to_upwind", ratios)
    mem = {
        n: r["peak_gib"] / res["upwind"]["peak_gib"]
        for n, r in res.items()
        if r.get("peak_gib") and res.get("upwind", {}).get("peak_gib")
    }
    if mem:
        log.put("peak_memory_ratio_to_upwind", mem)
