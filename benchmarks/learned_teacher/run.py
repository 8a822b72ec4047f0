"""Command line of the learned-teacher benchmark: train the teacher (``train``), train the
detector and its reference statistics (``detector``), or distil and score (the default)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.learned_teacher.bench import QUICK, BenchSettings, run_bench
from benchmarks.learned_teacher.data import (
    DATA_DIR,
    DETECTOR_FILE,
    REF_FILE,
    TEACHER_FILE,
    TRAIN_REF_FILE,
    train_and_heldout,
)
from benchmarks.learned_teacher.detector import train_detector
from benchmarks.learned_teacher.report import write_report
from benchmarks.learned_teacher.teacher import (
    TeacherSettings,
    teacher_samples_png,
    train_teacher,
    weights_sha256,
)
from odedistill import atomic_write_json, fid_from_stats, load_fid_ref, machine_info, to_uint8

RESULTS = Path(__file__).resolve().parents[1] / "results" / "learned_teacher"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learned_teacher")
    p.add_argument("command", nargs="?", default="bench", choices=("train", "detector", "bench"))
    p.add_argument("--quick", action="store_true", help="a preset that runs in seconds")
    p.add_argument("--out", type=Path, default=None, help="output file (train) or folder")
    p.add_argument("--budget", type=float, default=None, help="bench: CPU seconds per student")
    p.add_argument("--jobs", type=int, default=None, help="bench: students trained at once")
    args = p.parse_args(argv)
    if args.command == "train":
        settings = TeacherSettings(iterations=20) if args.quick else TeacherSettings()
        out = args.out or DATA_DIR / TEACHER_FILE
        summary = train_teacher(settings, out, log=log)
        log(
            f"wrote {out}: {summary['parameters']:,} parameters, {summary['cpu_seconds']:.0f} CPU s"
        )
        summary["weights_sha256"] = weights_sha256(out)
        log(f"weights sha256 {summary['weights_sha256']}")
        if args.out is None:
            teacher_samples_png(out, RESULTS / "teacher_heun_grid.png")
            summary["command"] = "python -m benchmarks.learned_teacher train"
            atomic_write_json(RESULTS / "teacher.json", summary)
    elif args.command == "detector":
        make_detector(args.out or DATA_DIR, epochs=2 if args.quick else 40)
    else:
        st = QUICK if args.quick else BenchSettings()
        if args.budget is not None:
            st.budget = args.budget
        if args.jobs is not None:
            st.jobs = args.jobs
        out = args.out or RESULTS
        start = machine_info(torch.device("cpu"))
        results = run_bench(st, out, log=log)
        results["meta"] = {
            "machine": machine_info(torch.device("cpu")),
            "load_average_start": start.get("load_average"),
            "started": start["time"],
        }
        command = "python -m benchmarks.learned_teacher" + (" --quick" if args.quick else "")
        if args.budget is not None:
            command += f" --budget {args.budget:g}"
        if args.jobs is not None:
            command += f" --jobs {args.jobs}"
        write_report(results, out, command)
        log(f"wrote {out / 'report.md'}")


def fid_ref(images: np.ndarray, out: Path, detector: Path) -> None:
    """``odedistill fid-ref`` on uint8 NCHW images, through the command line itself."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "images.npz"
        np.savez(src, images=images)
        cmd = [sys.executable, "-m", "odedistill", "fid-ref", str(src), "--out", str(out)]
        subprocess.run(
            [*cmd, "--detector", str(detector), "--device", "cpu", "--quiet"], check=True
        )


def make_detector(out: Path, epochs: int) -> dict:
    """Train the detector into ``out``/detector.pt, then the held-out and train statistics."""
    detector = out / DETECTOR_FILE
    summary = train_detector(detector, epochs=epochs, log=log)
    (x_tr, _), (x_ho, _) = train_and_heldout()
    fid_ref(to_uint8(x_ho).numpy(), out / REF_FILE, detector)
    fid_ref(to_uint8(x_tr).numpy(), out / TRAIN_REF_FILE, detector)
    floor = fid_from_stats(*load_fid_ref(out / TRAIN_REF_FILE), *load_fid_ref(out / REF_FILE))
    summary.update(data_floor_fd=floor, n_train=len(x_tr), n_heldout=len(x_ho))
    log(f"digits FD of the train split against the held-out split (data floor): {floor:.4g}")
    atomic_write_json(out / "detector.json", summary)
    return summary
