"""Screen one change to the flow-map student at a CPU budget: its digits FD at 1, 2, 4 and 8
steps for the raw weights and for EMAs of rate 0.999, 0.995 and 0.99 of one training run.

``python -m benchmarks.learned_teacher.screen NAME BUDGET [section.key=value ...]`` trains the
benchmark's flow map (its overrides, then the given ones) for BUDGET CPU seconds (process
clock, one thread) and writes ``screens/NAME.json`` beside the benchmark's results. Every EMA
rate comes from the same run, so the rate is screened for free.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.learned_teacher.bench import (
    FLOWMAP_STEPS,
    RECIPE,
    BenchSettings,
    overrides,
    scorer_for,
)
from odedistill import (
    StudentSampler,
    Trainer,
    atomic_write_json,
    build_session,
    load_config,
    machine_info,
    sample_times,
    weights_of,
)

EMA_RATES = [0.999, 0.995, 0.99]
SCREENS = Path(__file__).resolve().parents[1] / "results" / "learned_teacher" / "screens"


def screen(st: BenchSettings, extra: list[str]) -> dict:
    """Train the flow map with ``extra`` overrides for ``st.budget`` CPU s; FD of every weight set."""
    torch.set_num_threads(1)
    ema = f"train.ema_rates={EMA_RATES}"
    cfg = load_config(RECIPE, [*overrides("flowmap", "upwind", st), ema, *extra])
    session = build_session(cfg, torch.device("cpu"))
    t0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="odedistill-screen-") as tmp:
        trainer = Trainer(session, Path(tmp))
        trainer.run(show_progress=False)
    seconds = time.process_time() - t0
    scorer, grid = scorer_for(cfg), session.grid.double().cpu()
    fd: dict[str, dict[str, float]] = {}
    for name, model in weights_of(session).items():
        fd[name] = {}
        for K in FLOWMAP_STEPS:
            times = None if K == 1 else sample_times(grid, K)
            fd[name][str(K)] = scorer.score(StudentSampler(model, session.system, times))
    student = {k: getattr(cfg.student.options, k) for k in ("steps", "p_T", "sources")}
    return {"student": student, "iterations": trainer.step, "train_cpu_seconds": seconds, "fd": fd}


def main(argv: list[str] | None = None) -> None:
    name, budget, *extra = sys.argv[1:] if argv is None else argv
    start = machine_info(torch.device("cpu"))
    out = {"name": name, "budget": float(budget), "overrides": extra}
    out.update(screen(BenchSettings(budget=float(budget), jobs=1), extra))
    out["machine"] = machine_info(torch.device("cpu"))
    out["load_average_start"] = start.get("load_average")
    extras = " ".join(f"'{e}'" for e in extra)
    out["command"] = f"python -m benchmarks.learned_teacher.screen {name} {budget} {extras}".strip()
    SCREENS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(SCREENS / f"{name}.json", out)
    for weights, fd in out["fd"].items():
        print(name, weights, {k: round(v, 3) for k, v in fd.items()}, flush=True)


if __name__ == "__main__":
    main()
