"""Training steps to time side by side: ours through ``Trainer``, theirs through ``OfficialStep``.

``alternate`` warms every configuration up (its first step counted by
``torch.utils.flop_counter.FlopCounterMode``, as benchmarks/train_step.py counts), then times
rounds of steps configuration after configuration, the order rotating each round, so that a
drift of the machine (clocks, temperature, other jobs) falls on all of them alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu.measure import (
    Deadline,
    PartLog,
    PeakMemory,
    gib,
    median,
    spread,
    sync,
    tensor_bytes,
    time_call,
)
from benchmarks.gpu.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "recipes" / "pid_cifar10.toml"
CIFAR_FLOWMAP = ROOT / "recipes" / "pid_cifar10_flowmap.toml"


def our_overrides(settings: Settings, precision: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The recipe's overrides: the random EDM stand-in teacher, the check's batch and precision."""
    return [
        "teacher.kind=edm_random",
        *settings.arch,
        f"run.device={settings.device}",
        "loss.distance=l2",
        f"train.batch={settings.batch}",
        "train.micro_batch=0",
        f"train.precision={precision}",
        "train.tf32=false",
        "train.sample_every=0",
        *(["run.threads=1"] if settings.device == "cpu" else []),
        *extra,
    ]


def our_trainer(
    settings: Settings,
    run_dir: Path,
    precision: str,
    extra: tuple[str, ...] = (),
    recipe: Path = CIFAR,
    compile_backend: str | None = None,
):
    """A ``Trainer`` on the recipe (full DDPM++ or the dry run's shrunk one), random weights.

    ``compile_backend``: 'inductor' sets the recipe's ``train.compile = true``; another backend
    (the dry run's 'eager') compiles the same two networks with it.
    """
    from odedistill import Trainer, build_session, load_config

    over = our_overrides(settings, precision, extra)
    if compile_backend == "inductor":
        over.append("train.compile=true")
    session = build_session(load_config(recipe, over))
    trainer = Trainer(session, run_dir)
    if compile_backend not in (None, "inductor"):
        session.model.net.compile(backend=compile_backend)
        session.system.denoiser.compile(backend=compile_backend)
    return trainer


def our_step(trainer) -> Callable[[], None]:
    """One iteration as ``Trainer.run`` does it: the step, the loss read back, the optimiser."""

    def step() -> None:
        loss = trainer.train_step()
        float(loss)
        trainer.optimizer_step()

    return step


def our_resident(trainer) -> list[torch.Tensor]:
    s = trainer.session
    out = list(s.model.parameters()) + list(s.system.denoiser.parameters())
    out += [t for sd in s.ema.state_dict().values() for t in sd.values()]
    out += [v for st in trainer.opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return out


@dataclass
class Candidate:
    """One configuration to time: its step, batch, resident tensors and TF32 switches."""

    name: str
    step: Callable[[], None]
    batch: int
    resident: Callable[[], list[torch.Tensor]]
    tf32: tuple[bool, bool] = (False, False)  # (cuBLAS matmul, cuDNN convolution)
    count_flops: bool = True
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def tf32_flags(matmul: bool, cudnn: bool):
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def warm_up(c: Candidate, settings: Settings, device: torch.device) -> dict[str, Any]:
    """``settings.warmup`` untimed steps; the first one's FLOPs and each one's seconds."""
    out: dict[str, Any] = {"batch": c.batch, **c.info, "tf32": list(c.tf32), "warmup_s": []}
    with tf32_flags(*c.tf32):
        for k in range(max(settings.warmup, 1)):
            counter = FlopCounterMode(display=False) if k == 0 and c.count_flops else None
            sync(device)
            t0 = time.perf_counter()
            with counter or contextlib.nullcontext():
                c.step()
            sync(device)
            out["warmup_s"].append(time.perf_counter() - t0)
            if counter is not None:
                out["flops_per_iteration"] = counter.get_total_flops()
    return out


def alternate(
    candidates: list[Candidate],
    settings: Settings,
    device: torch.device,
    deadline: Deadline,
    log: PartLog,
    key: str,
    failed: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Warm every candidate up, then time alternating rounds until done or out of time.

    A candidate whose step raises is recorded with its error (``failed`` holds those that
    could not even be built) and left out of the later rounds; the others go on.
    """
    results: dict[str, dict[str, Any]] = {n: {"error": e} for n, e in (failed or {}).items()}
    live = []
    for c in candidates:
        try:
            results[c.name] = warm_up(c, settings, device)
            results[c.name]["resident_gib"] = gib(tensor_bytes(c.resident()))
            results[c.name]["times_s"] = []
            live.append(c)
        except Exception as e:  # recorded; the other candidates still run
            results[c.name] = {"error": first_line(e), **c.info}
        log.put(key, results)
    peaks = {c.name: PeakMemory(device) for c in live}
    for r in range(settings.rounds):
        per_round = sum(
            median(results[c.name]["times_s"] or results[c.name]["warmup_s"][-1:]) for c in live
        )
        if r > 0 and deadline.left() < 1.5 * per_round * settings.steps:
            log.note(f"{key}: stopped after {r} round(s), the part's time was running out")
            break
        order = live[r % max(len(live), 1) :] + live[: r % max(len(live), 1)]
        for c in order:
            try:
                with tf32_flags(*c.tf32), peaks[c.name]:
                    for _ in range(settings.steps):
                        results[c.name]["times_s"].append(time_call(c.step, device))
            except Exception as e:
                results[c.name]["error"] = first_line(e)
                live.remove(c)
        for c in live:
            summarise(results[c.name], peaks[c.name], device)
        log.put(key, results)
    return results


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def guarded(failed: dict[str, str], name: str, build: Callable[..., Any], *args, **kw) -> Any:
    """``build(*args, **kw)``, or None with its error recorded under ``name`` in ``failed``."""
    try:
        return build(*args, **kw)
    except Exception as e:
        failed[name] = first_line(e)
        return None


def summarise(res: dict[str, Any], peak: PeakMemory, device: torch.device) -> None:
    times = res["times_s"]
    if not times:
        return
    s = median(times)
    res.update(
        seconds_per_iteration=s,
        spread=spread(times),
        images_per_s=res["batch"] / s,
    )
    if res.get("flops_per_iteration"):
        res["achieved_tflops"] = res["flops_per_iteration"] / s / 1e12
    if device.type == "cuda":
        res["transient_gib"] = gib(peak.transient)
        res["peak_gib"] = res["resident_gib"] + res["transient_gib"]


def ratio(results: dict[str, dict[str, Any]], a: str, b: str) -> float | None:
    """images/s of ``a`` over images/s of ``b`` (None when either is missing)."""
    x, y = results.get(a, {}).get("images_per_s"), results.get(b, {}).get("images_per_s")
    return x / y if x and y else None
