"""Parts 'official' and 'compile': one PID iteration of DDPM++ CIFAR-10, ours against the official
code's, fp32 and bf16, torch.compile off and on; images/s, peak memory and model FLOP utilisation.

MFU = FLOPs of one iteration (counted in eager mode) / (seconds per iteration x peak), against
the datasheet's dense peak (``SPEC_PEAK_TFLOPS``) and against a bf16 matrix product measured on
the same device in the same process (8192^3 on random data).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu.measure import Deadline, PartLog, median, time_call
from benchmarks.gpu.settings import SPEC_PEAK_TFLOPS, Settings
from benchmarks.gpu.steps import (
    Candidate,
    alternate,
    guarded,
    our_resident,
    our_step,
    our_trainer,
    ratio,
)

#: PyTorch's default TF32 switches, which the official code runs under: (matmul, cuDNN)
TORCH_DEFAULT_TF32 = (False, True)


def matmul_ceiling(device: torch.device, n: int, reps: int = 10) -> dict[str, Any]:
    """TFLOP/s of an n x n x n bf16 matrix product on random data (median of ``reps``)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    times = [time_call(lambda: a @ b, device) for _ in range(reps)]
    return {"n": n, "dtype": str(dtype), "tflops": 2 * n**3 / median(times) / 1e12}


def add_mfu(res: dict[str, Any], precision: str, measured_tflops: float | None) -> None:
    tflops = res.get("achieved_tflops")
    if not tflops or not measured_tflops:  # no MFU on a CPU (the dry run)
        return
    res["peak_spec_tflops"] = SPEC_PEAK_TFLOPS[precision]
    res["mfu_spec"] = tflops / SPEC_PEAK_TFLOPS[precision]
    if measured_tflops and precision == "bf16":
        res["mfu_measured_matmul"] = tflops / measured_tflops


def _ours(settings: Settings, run_dir: Path, name: str, precision: str, tf32) -> Candidate:
    trainer = our_trainer(settings, run_dir, precision)
    return Candidate(
        name,
        our_step(trainer),
        settings.batch,
        lambda: our_resident(trainer),
        tf32=tf32,
        info={
            "code": "odedistill",
            "precision": precision,
            "parameters": sum(p.numel() for p in trainer.session.model.parameters()),
        },
    )


def _theirs(settings: Settings, cm, run_dir: Path, name: str, tf32) -> Candidate:
    from benchmarks.gpu.official import OfficialStep

    theirs = OfficialStep(
        cm, settings.official, settings.batch, torch.device(settings.device), run_dir
    )
    info = {"code": "pid_diffusion", "precision": "fp32", "parameters": theirs.parameters()}
    return Candidate(name, theirs.step, settings.batch, theirs.resident_tensors, tf32, info=info)


def part_official(settings: Settings, official: Path | None, log: PartLog, dl: Deadline) -> None:
    """Ours (fp32, fp32 with TF32, bf16) against theirs (fp32; fp32 with PyTorch's defaults)."""
    device = torch.device(settings.device)
    tmp = Path(tempfile.mkdtemp(prefix="odedistill-gpu-"))
    cands, failed = [], {}
    cuda = device.type == "cuda"
    for name, precision, tf32 in (
        ("ours fp32", "fp32", (False, False)),
        ("ours fp32 + TF32", "fp32", (True, True)),
        ("ours bf16", "bf16", (False, False)),
    ):
        if cuda or tf32 == (False, False):  # TF32 is a CUDA switch
            run_dir = tmp / name.replace(" ", "_")
            c = guarded(failed, name, _ours, settings, run_dir, name, precision, tf32)
            cands += [c] if c else []
    if official is None or not Path(official).exists():
        log.put("official_skipped", f"no official code at {official}: ours only")
    else:
        from benchmarks.gpu.official import load_official

        loaded = guarded(failed, "official code", load_official, Path(official))
        if loaded:
            cm, stood_in = loaded
            log.put("official_stand_ins", stood_in)
            log.put("official_commit", _commit(Path(official)))
            for name, tf32 in (
                ("official fp32", (False, False)),
                ("official fp32, PyTorch default TF32", TORCH_DEFAULT_TF32),
            ):
                if cuda or tf32 == (False, False):
                    run_dir = tmp / "official"
                    c = guarded(failed, name, _theirs, settings, cm, run_dir, name, tf32)
                    cands += [c] if c else []
    res = alternate(cands, settings, device, dl, log, "configs", failed)
    measured = None
    if dl.left() > 5:
        ceiling = matmul_ceiling(device, 8192 if cuda else 256)
        log.put("matmul_ceiling", ceiling)
        measured = ceiling["tflops"] if cuda else None
    for r in res.values():
        if "precision" in r:
            add_mfu(r, r["precision"] if r.get("tf32") == [False, False] else "tf32", measured)
    log.put("configs", res)
    log.put(
        "ratios",
        {
            "ours bf16 / official fp32": ratio(res, "ours bf16", "official fp32"),
            "ours fp32 / official fp32": ratio(res, "ours fp32", "official fp32"),
            "ours fp32 + TF32 / official fp32, PyTorch default TF32": ratio(
                res, "ours fp32 + TF32", "official fp32, PyTorch default TF32"
            ),
            "ours bf16 / ours fp32": ratio(res, "ours bf16", "ours fp32"),
        },
    )


def part_compile(settings: Settings, log: PartLog, dl: Deadline) -> None:
    """Ours with torch.compile off and on, bf16 then fp32 while the part's time allows."""
    device = torch.device(settings.device)
    tmp = Path(tempfile.mkdtemp(prefix="odedistill-gpu-"))
    log.put("backend", settings.compile_backend)
    measured = None
    if device.type == "cuda":
        measured = matmul_ceiling(device, 8192)["tflops"]
        log.put("matmul_tflops", measured)
    compile_s = None
    for precision in settings.compile_precisions:
        if compile_s is not None and dl.left() < 2 * compile_s:
            log.note(f"fp32/bf16 compile of {precision} left out: {dl.left():.0f} s left")
            break
        eager = our_trainer(settings, tmp / f"eager_{precision}", precision)
        compiled = our_trainer(
            settings,
            tmp / f"compiled_{precision}",
            precision,
            compile_backend=settings.compile_backend,
        )
        cands = [
            Candidate(
                f"ours {precision} eager",
                our_step(eager),
                settings.batch,
                lambda t=eager: our_resident(t),
                info={"precision": precision, "compile": False},
            ),
            Candidate(
                f"ours {precision} compiled",
                our_step(compiled),
                settings.batch,
                lambda t=compiled: our_resident(t),
                count_flops=False,
                info={"precision": precision, "compile": True},
            ),
        ]
        res = alternate(cands, settings, device, dl, log, precision)
        comp = res[f"ours {precision} compiled"]
        compile_s = sum(comp.get("warmup_s", [])) or float("inf")  # a failed one: no more
        comp["flops_per_iteration"] = res[f"ours {precision} eager"].get("flops_per_iteration")
        if comp.get("flops_per_iteration") and comp.get("seconds_per_iteration"):
            comp["achieved_tflops"] = (
                comp["flops_per_iteration"] / comp["seconds_per_iteration"] / 1e12
            )
        for r in res.values():
            add_mfu(r, precision, measured)
        log.put(precision, res)
        if dl.left() < 5:
            break
        log.put(
            f"{precision} compiled / eager",
            ratio(res, f"ours {precision} compiled", f"ours {precision} eager"),
        )


def _commit(path: Path) -> str | None:
    import subprocess

    r = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return r.stdout.strip() or None
