"""Distil the learned digits teacher with every residual scheme (PID, one step) and as a flow map
(1, 2, 4, 8 steps) under equal CPU budgets; score every sampler by digits FD.

Each student is the recipe ``digits_learned`` with its scheme or kind changed and a budget of
``budget`` CPU seconds of training (``train.max_seconds`` on the process clock, one thread);
the EMA weights are scored. The teacher's Euler and Heun curves are computed once, on the
same seeds and from the same noise z = T·n as the students.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from odedistill import (
    SCHEMES,
    FIDScorer,
    SolverSampler,
    StudentSampler,
    Trainer,
    build_session,
    fid_from_stats,
    generate_samples,
    load_config,
    load_fid_ref,
    reported_weights,
    sample_times,
    save_image_grid,
    weights_of,
)

RECIPE = "digits_learned"
FLOWMAP_STEPS = [1, 2, 4, 8]


@dataclass
class BenchSettings:
    budget: float = 60.0  # CPU seconds of training per student
    batch: int = 64
    N: int = 250
    fid_num: int = 500
    teacher_nfe: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8, 12, 16, 24, 35])
    jobs: int = 5  # students (and the teacher's curves) computed at once, each on one thread
    seed: int = 0


QUICK = BenchSettings(budget=1.0, batch=8, N=10, fid_num=32, teacher_nfe=[1, 2, 4], jobs=1)


def students() -> list[tuple[str, str]]:
    """(kind, scheme) of every student: PID with each residual scheme, and the flow map."""
    return [("pid", s) for s in SCHEMES.names()] + [("flowmap", "upwind")]


def overrides(kind: str, scheme: str, st: BenchSettings) -> list[str]:
    out = [
        f"student.kind='{kind}'",
        f"scheme.kind='{scheme}'",
        f"scheme.N={st.N}",
        f"train.batch={st.batch}",
        "train.iterations=1000000",
        f"train.max_seconds={st.budget}",
        "train.clock='process'",
        "train.checkpoint_every=1000000",
        "train.log_every=100",
        "run.threads=1",
        f"run.seed={st.seed}",
        f"eval.fid_num={st.fid_num}",
    ]
    if kind == "flowmap":
        out += [f"student.steps={FLOWMAP_STEPS[1:]}", "student.sources='sampler'"]
    return out


def scorer_for(cfg) -> FIDScorer:
    e = cfg.eval
    return FIDScorer(e.fid_ref, e.fid_detector, list(range(e.fid_num)), progress=False)


def train_student(kind: str, scheme: str, st: BenchSettings, grid_png: Path | None) -> dict:
    """Train one student to its budget, then its digits FD at each of its step counts."""
    torch.set_num_threads(1)
    cfg = load_config(RECIPE, overrides(kind, scheme, st))
    session = build_session(cfg, torch.device("cpu"))
    t0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="odedistill-bench-") as tmp:
        trainer = Trainer(session, Path(tmp))
        trainer.run(show_progress=False)
        steps_done = trainer.step
    seconds = time.process_time() - t0
    model = weights_of(session)[reported_weights(session)]
    scorer = scorer_for(cfg)
    colloc = session.grid.double().cpu()
    fd = {}
    for K in FLOWMAP_STEPS if kind == "flowmap" else [1]:
        sampler = StudentSampler(model, session.system, None if K == 1 else sample_times(colloc, K))
        fd[str(K)] = scorer.score(sampler)
        if grid_png is not None and K in (1, 4):
            _, s = next(generate_samples(sampler, range(64), 64))
            save_image_grid(s.x, grid_png.with_name(f"{grid_png.stem}_{K}.png"), 8, scale=4)
    return {
        "student": kind,
        "scheme": scheme,
        "iterations": steps_done,
        "train_cpu_seconds": seconds,
        "weights": reported_weights(session),
        "fd": fd,
    }


def teacher_curve(st: BenchSettings, grid_png: Path | None) -> dict[str, Any]:
    """FD of the teacher's Euler and Heun at ``teacher_nfe`` evaluations, and the data floor."""
    torch.set_num_threads(1)
    cfg = load_config(RECIPE, overrides("pid", "upwind", st))
    session = build_session(cfg, torch.device("cpu"))
    scorer = scorer_for(cfg)
    t0 = time.process_time()
    curve: dict[str, dict[str, float]] = {"euler": {}, "heun": {}}
    for method in curve:
        for nfe in st.teacher_nfe:
            sampler = SolverSampler(session.system, method, nfe, cfg.scheme.grid, cfg.scheme.rho)
            curve[method][str(nfe)] = scorer.score(sampler)
            if grid_png is not None and method == "heun" and nfe == max(st.teacher_nfe):
                _, s = next(generate_samples(sampler, range(64), 64))
                save_image_grid(s.x, grid_png, 8, scale=4)
    floor = fid_from_stats(*load_fid_ref(cfg.eval.fid_floor_ref), scorer.mu_ref, scorer.sigma_ref)
    return {
        "curve": curve,
        "data_floor": floor,
        "cpu_seconds": time.process_time() - t0,
        **scorer.describe(),
    }


def run_bench(st: BenchSettings, out: Path, log=print) -> dict[str, Any]:
    """Every student and the teacher's curves; pictures into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        (train_student, (kind, scheme, st, out / f"samples_{kind}_{scheme}.png"))
        for kind, scheme in students()
    ]
    tasks.append((teacher_curve, (st, out / "teacher_heun.png")))
    if st.jobs == 1:
        done = [fn(*a) for fn, a in tasks]
    else:  # fresh interpreters: each job has its own one-thread torch
        with ProcessPoolExecutor(st.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = [f.result() for f in [pool.submit(fn, *a) for fn, a in tasks]]
    *results, t = done
    for r in results:
        log(f"{r['student']} {r['scheme']}: {r['iterations']} iterations, FD {r['fd']}")
    log(f"teacher: Heun {t['curve']['heun']}, data floor {t['data_floor']:.4g}")
    return {"settings": asdict(st), "students": results, "teacher": t}
