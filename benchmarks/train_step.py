"""Time one PID training iteration of the full EDM networks: images/s, peak memory, FLOPs and model FLOP utilisation.

Each configuration (architecture x scheme x batch x precision) runs in its own process, through
the training code itself (``Trainer.train_step`` + ``optimizer_step``: the student's 1-3
evaluations, the teacher under inference mode, backward, RAdam, three EMAs). Teacher and
student are EDM's released architectures with random weights (``teacher.kind = 'edm_random'``):
DDPM++ at CIFAR-10 32x32 (``recipes/pid_cifar10.toml``) and ADM at ImageNet 64x64
(``recipes/pid_imagenet64.toml``). The distance is pseudo-Huber unless ``--distance lpips_avgpool``
(LPIPS adds a VGG-16 at 224x224 per image pair, which often costs more than the UNet).

FLOPs of one iteration are counted by ``torch.utils.flop_counter.FlopCounterMode`` during the
first (warm-up) iteration: matmuls, convolutions and attention of the student's forward and
backward passes and of the teacher's forward. Model FLOP utilisation (MFU) = FLOPs per
iteration / (seconds per iteration x peak); on an H100/H200 the peaks assumed are the dense
tensor-core ones from NVIDIA's H100 SXM datasheet: 989 TFLOP/s for bf16/fp16, 495 for TF32,
and 67 TFLOP/s for fp32 without tensor cores. No MFU is given on a CPU.

    python benchmarks/train_step.py --device cpu --batch ddpmpp=4 --batch adm=2 \\
        --out benchmarks/results/train_step_cpu.md
    python benchmarks/train_step.py --device cuda --precision bf16 --precision fp32 \\
        --batch ddpmpp=128 --batch adm=32 --out benchmarks/results/train_step_h100.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"ddpmpp": "pid_cifar10.toml", "adm": "pid_imagenet64.toml"}
NAMES = {"ddpmpp": "DDPM++ CIFAR-10 32x32", "adm": "ADM ImageNet 64x64"}
#: dense peak TFLOP/s of an H100 SXM (NVIDIA datasheet), by precision
GPU_PEAK_TFLOPS = {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    arch: str,
    scheme: str,
    batch: int,
    precision: str,
    device: str,
    steps: int,
    distance: str,
    tf32: bool,
    warmup: int = 1,
) -> dict[str, Any]:
    """One configuration, in this process: ``warmup`` iterations, then ``steps`` timed ones."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from odedistill import Trainer, build_session, load_config, peak_memory_gib

    overrides = [
        "teacher.kind=edm_random",
        f"run.device={device}",
        f"scheme.kind={scheme}",
        f"loss.distance={distance}",
        f"train.batch={batch}",
        "train.micro_batch=0",
        f"train.precision={precision}",
        f"train.tf32={'true' if tf32 else 'false'}",
    ]
    cfg = load_config(ROOT / "recipes" / RECIPES[arch], overrides)
    session = build_session(cfg)
    dev = session.device
    params = sum(p.numel() for p in session.model.parameters())
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        trainer = Trainer(session, Path(tmp))
        times, flops = [], 0
        for k in range(warmup + steps):
            if k == warmup and dev.type == "cuda":
                _sync(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            counter = FlopCounterMode(display=False) if k == 0 else contextlib.nullcontext()
            _sync(dev)
            t0 = time.perf_counter()
            with counter:  # FLOPs of the first iteration (a warm-up one unless warmup = 0)
                loss = trainer.train_step()
            trainer.optimizer_step()
            float(loss)
            _sync(dev)
            if k >= warmup:
                times.append(time.perf_counter() - t0)
            if k == 0:
                flops = counter.get_total_flops()
    mem, kind = peak_memory_gib(dev)
    seconds = sorted(times)[len(times) // 2]
    out = {
        "arch": arch,
        "scheme": scheme,
        "batch": batch,
        "precision": precision,
        "tf32": tf32 and dev.type == "cuda",
        "device": str(dev),
        "distance": distance,
        "parameters": params,
        "seconds_per_iteration": seconds,
        "all_seconds": times,
        "images_per_s": batch / seconds,
        "peak_mem_gib": mem,
        "peak_mem_kind": kind,
        "flops_per_iteration": flops,
        "achieved_tflops": flops / seconds / 1e12,
    }
    if dev.type == "cuda":
        key = "tf32" if precision == "fp32" and tf32 else precision
        out["peak_tflops_assumed"] = GPU_PEAK_TFLOPS[key]
        out["mfu"] = out["achieved_tflops"] / GPU_PEAK_TFLOPS[key]
    return out


def machine(device: str) -> dict[str, Any]:
    import torch

    from odedistill import machine_info

    info: dict[str, Any] = {
        "cpu": machine_info(torch.device("cpu"))["cpu_model"],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def _fmt_flops(x: float) -> str:
    return f"{x / 1e12:.2f} T" if x >= 1e12 else f"{x / 1e9:.1f} G"


def render(results: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    gpu = any("mfu" in r for r in results)
    lines = [
        "# One PID training iteration: throughput and memory",
        "",
        f"Machine: {info.get('gpu') or info['cpu']}"
        + (f" (host CPU {info['cpu']})" if info.get("gpu") else "")
        + f", {info['cores']} cores ({info['torch_threads']} torch threads); "
        f"load average before {info['load_before']}, after {info['load_after']}; "
        f"torch {info['torch']}, Python {info['python']}.",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "Random-weight EDM networks, teacher and student the same architecture "
        "(`teacher.kind = 'edm_random'`, `student.net = student.init = 'teacher'`), N = 250, "
        f"distance {results[0]['distance'] if results else '-'}, RAdam, three EMAs. "
        f"Seconds per iteration: median of {info['steps']} timed iteration(s) after "
        f"{info['warmup']} warm-up iteration(s); the FLOPs are counted in the first iteration "
        "(a timed one when there is no warm-up) by `torch.utils.flop_counter.FlopCounterMode`: "
        "matmuls, convolutions and attention of the student's forward and backward passes and of "
        "the teacher's forward pass.",
        "",
    ]
    header = ["network", "scheme", "batch", "precision", "s/iter", "images/s", "peak mem GiB"]
    header += ["FLOPs/iter", "TFLOP/s"] + (["MFU (peak)"] if gpu else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        if "error" in r:
            lines.append(
                f"| {NAMES[r['arch']]} | {r['scheme']} | {r['batch']} | failed: {r['error']} |"
            )
            continue
        prec = r["precision"] + (" (TF32)" if r.get("tf32") else "")
        row = [
            NAMES[r["arch"]],
            r["scheme"],
            str(r["batch"]),
            prec,
            f"{r['seconds_per_iteration']:.3g}",
            f"{r['images_per_s']:.3g}",
            f"{r['peak_mem_gib']:.2f} ({'RSS' if r['peak_mem_kind'] == 'cpu_max_rss' else 'CUDA'})",
            _fmt_flops(r["flops_per_iteration"]),
            f"{r['achieved_tflops']:.3g}",
        ]
        if gpu:
            row.append(f"{r['mfu']:.1%} ({r['peak_tflops_assumed']:g})" if "mfu" in r else "-")
        lines.append("| " + " | ".join(row) + " |")
    if info.get("wall_s"):
        lines += ["", f"Wall time of the whole command: {info['wall_s'] / 60:.1f} minutes."]
    for note in info.get("notes", []):
        lines += ["", note]
    if info.get("skipped"):
        lines += ["", f"Left out (`--skip`): {', '.join(info['skipped'])}."]
    lines += [
        "",
        "Peak memory on the CPU is the benchmark process's maximum resident set size (weights, "
        "three EMAs, optimiser state, activations, Python and the libraries); on a GPU it is "
        "`torch.cuda.max_memory_allocated` during the timed iterations. The load average is "
        "the machine's (other jobs share it), so CPU timings are indicative only.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from odedistill import DISTANCES, SCHEMES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K")
    p.add_argument("--arch", action="append", choices=list(RECIPES), help="ddpmpp and/or adm")
    p.add_argument(
        "--scheme", action="append", choices=SCHEMES.names(), help="schemes (default: all)"
    )
    p.add_argument("--batch", action="append", default=[], help="ARCH=N, e.g. ddpmpp=4")
    p.add_argument("--precision", action="append", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--tf32", action="store_true", help="CUDA fp32: allow TF32 tensor cores")
    p.add_argument("--threads", type=int, default=0, help="CPU: torch threads (0 = default)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--steps", type=int, default=2, help="timed iterations per configuration")
    p.add_argument(
        "--distance",
        default="pseudo_huber",
        choices=DISTANCES.names(),
    )
    p.add_argument(
        "--skip", action="append", default=[], help="ARCH:SCHEME to leave out, e.g. adm:autodiff"
    )
    p.add_argument("--out", type=Path, help="write the Markdown table here (and .json beside)")
    p.add_argument("--render", type=Path, help="rewrite --out from a saved .json; no timing")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.render:
        saved = json.loads(a.render.read_text())
        text = render(saved["results"], saved["machine"], saved["command"])
        print(text)
        if a.out:
            a.out.write_text(text)
        return
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.one:  # a child process: one configuration, JSON on the last line of stdout
        arch, scheme, batch, precision = a.one.split(",")
        r = measure(
            arch, scheme, int(batch), precision, a.device, a.steps, a.distance, a.tf32, a.warmup
        )
        print(json.dumps(r))
        return
    archs = a.arch or ["ddpmpp", "adm"]
    schemes = a.scheme or SCHEMES.names()
    precisions = a.precision or ["fp32"]
    batches = {"ddpmpp": 4, "adm": 2}
    for item in a.batch:
        name, _, n = item.partition("=")
        batches[name] = int(n)
    command = "python benchmarks/train_step.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    info = machine(a.device)
    info["steps"], info["warmup"] = a.steps, a.warmup
    info["skipped"] = list(a.skip)
    info["load_before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = []
    t_all = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for arch in archs:
        for precision in precisions:
            for scheme in schemes:
                if f"{arch}:{scheme}" in a.skip:
                    continue
                spec = f"{arch},{scheme},{batches[arch]},{precision}"
                cmd = [sys.executable, __file__, "--one", spec, "--device", a.device]
                cmd += ["--steps", str(a.steps), "--warmup", str(a.warmup)]
                cmd += ["--distance", a.distance]
                cmd += ["--tf32"] if a.tf32 else []
                cmd += ["--threads", str(a.threads)] if a.threads else []
                t0 = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if r.returncode == 0:
                    res = json.loads(r.stdout.strip().splitlines()[-1])
                else:
                    last = (r.stderr.strip().splitlines() or ["?"])[-1]
                    res = {"arch": arch, "scheme": scheme, "batch": batches[arch], "error": last}
                results.append(res)
                print(
                    f"{spec}: {time.perf_counter() - t0:.0f} s wall, "
                    + (
                        f"{res['seconds_per_iteration']:.3g} s/iter, {res['images_per_s']:.3g} images/s"
                        if "error" not in res
                        else res["error"]
                    ),
                    file=sys.stderr,
                )
    info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["wall_s"] = time.perf_counter() - t_all
    text = render(results, info, command)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        a.out.with_suffix(".json").write_text(
            json.dumps({"machine": info, "command": command, "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
