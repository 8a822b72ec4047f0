"""Part 'torchrun': recipes/pid_cifar10.toml under a one-GPU torchrun, killed and resumed, then sampled.

Run A trains ``torchrun_iterations`` steps straight through. Run B, the same command in another
folder, is killed with SIGKILL (no chance to save) once its metrics reach ``kill_at_step``, and
resumed with ``--resume`` from its last periodic checkpoint to the same end. Both run under
PyTorch's deterministic algorithms (``benchmarks.gpu.deterministic``); A's and B's final
checkpoints are compared tensor by tensor (weights, EMAs, optimiser state), bit for bit, and the
first difference, if any, is recorded. Then ``odedistill sample`` draws ``sample_images``
images by seed from run A.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu.measure import Deadline, PartLog, timed_cli
from benchmarks.gpu.settings import Settings
from benchmarks.gpu.steps import CIFAR, ROOT

NONDETERMINISTIC = "does not have a deterministic implementation"


def run_overrides(settings: Settings) -> list[str]:
    """The recipe with the random EDM stand-in teacher and a distance needing no downloads."""
    log_every = min(10, settings.checkpoint_every)
    return [
        "teacher.kind=edm_random",
        *settings.arch,
        "loss.distance=pseudo_huber",
        f"run.device={settings.device}",
        f"train.batch={settings.batch}",
        f"train.precision={settings.torchrun_precision}",
        f"train.iterations={settings.torchrun_iterations}",
        f"train.checkpoint_every={settings.checkpoint_every}",
        "train.keep_checkpoints=100",
        f"train.log_every={log_every if settings.device != 'cpu' else 1}",
        "train.sample_every=0",
        *(["run.threads=1"] if settings.device == "cpu" else []),
    ]


def torchrun_command(settings: Settings, out: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += ["-m", "benchmarks.gpu.deterministic", "run", str(CIFAR), "--out", str(out)]
    cmd += ["--no-progress"] + (["--resume"] if resume else [])
    for o in run_overrides(settings):
        cmd += ["--set", o]
    return cmd


def child_env() -> dict[str, str]:
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def last_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    for ln in reversed(lines):
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:  # a line being written
            continue
        if "step" in rec and "it_per_s" in rec:
            return rec
    return {}


def launch(
    cmd: list[str],
    log_path: Path,
    timeout: float,
    kill_at: int | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``cmd`` in its own process group; SIGKILL the group once ``run_dir`` logs ``kill_at``."""
    t0 = time.perf_counter()
    with log_path.open("w") as logf:
        p = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=ROOT,
            start_new_session=True,
        )
        killed_at = None
        while p.poll() is None:
            if time.perf_counter() - t0 > timeout:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                tail = log_path.read_text(errors="replace").strip().splitlines()[-20:]
                return {
                    "error": f"timed out after {timeout:.0f} s",
                    "wall_s": timeout,
                    "log_tail": [ln[:300] for ln in tail],
                }
            if kill_at is not None and run_dir is not None:
                step = last_metrics(run_dir).get("step", 0)
                if step >= kill_at:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    killed_at = step
                    break
            time.sleep(0.02)
    out: dict[str, Any] = {"returncode": p.returncode, "wall_s": time.perf_counter() - t0}
    if killed_at is not None:
        out["killed_after_step"] = killed_at
    text = log_path.read_text(errors="replace")
    out["nondeterministic_ops"] = sorted(
        {ln.strip()[:300] for ln in text.splitlines() if NONDETERMINISTIC in ln}
    )
    if p.returncode not in (0, None) and killed_at is None:
        lines = text.strip().splitlines() or ["?"]
        out["error"] = lines[-1][:300]
        out["log_tail"] = [ln[:300] for ln in lines[-20:]]
    return out


def compare(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> tuple[int, dict | None]:
    """(tensors compared, the first difference) between two checkpoints' nested states."""
    n = 0
    for key in a:
        where = f"{prefix}{key}"
        x, y = a[key], b.get(key) if isinstance(b, dict) else None
        if isinstance(x, dict):
            if not isinstance(y, dict):
                return n, {"where": where, "what": "missing in the resumed run"}
            k, diff = compare(x, y, where + ".")
            n += k
            if diff:
                return n, diff
        elif torch.is_tensor(x):
            n += 1
            if not torch.is_tensor(y) or x.shape != y.shape or x.dtype != y.dtype:
                return n, {"where": where, "what": "shape or dtype differs"}
            if not torch.equal(x, y):
                d = (x.double() - y.double()).abs()
                return n, {
                    "where": where,
                    "max_abs_diff": float(d.max()),
                    "elements_differing": int((d > 0).sum()),
                    "elements": x.numel(),
                }
    return n, None


def final_state(run_dir: Path) -> dict[str, Any]:
    from odedistill import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    state = load_checkpoint(path)
    return {
        "step": state["step"],
        "model": state["model"],
        "ema": state["ema"],
        "optimizer": state["optimizer"],
    }


def part_torchrun(settings: Settings, work: Path, log: PartLog, dl: Deadline) -> None:
    a_dir, b_dir = work / "run_a", work / "run_b"
    log.put("command", " ".join(torchrun_command(settings, a_dir)[1:]))
    a = launch(torchrun_command(settings, a_dir), work / "run_a.log", dl.left() * 0.45)
    a.update(last_metrics(a_dir))
    log.put("run_a", a)
    b = launch(
        torchrun_command(settings, b_dir),
        work / "run_b.log",
        dl.left() * 0.5,
        kill_at=settings.kill_at_step,
        run_dir=b_dir,
    )
    log.put("run_b_killed", b)
    if b.get("killed_after_step") is None:
        log.note("run B ended before it could be killed; the resume below is not a kill test")
    from odedistill import latest_checkpoint

    ckpt = latest_checkpoint(b_dir)
    log.put("resumed_from", str(ckpt.name) if ckpt else None)
    r = launch(
        torchrun_command(settings, b_dir, resume=True), work / "run_b_resume.log", dl.left() * 0.8
    )
    r.update(last_metrics(b_dir))
    log.put("run_b_resumed", r)
    if a.get("returncode") == 0 and r.get("returncode") == 0:
        sa, sb = final_state(a_dir), final_state(b_dir)
        n, diff = compare(
            {k: sa[k] for k in ("model", "ema", "optimizer")},
            {k: sb[k] for k in ("model", "ema", "optimizer")},
        )
        log.put(
            "bit_identical",
            {
                "steps": [sa["step"], sb["step"]],
                "tensors_compared": n,
                "identical": diff is None and sa["step"] == sb["step"],
                "first_difference": diff,
            },
        )
    if a.get("returncode") == 0:
        n = settings.sample_images
        out = work / "samples.npz"
        code, wall = timed_cli(
            [
                "sample",
                str(a_dir),
                "--seeds",
                f"0-{n - 1}",
                "--out",
                str(out),
                "--batch",
                str(min(n, 500)),
            ]
        )
        log.put(
            "sample",
            {
                "command": f"odedistill sample RUN --seeds 0-{n - 1} --out samples.npz",
                "returncode": code,
                "images": n,
                "wall_s": wall,
                "images_per_s": n / wall if code == 0 else None,
            },
        )
