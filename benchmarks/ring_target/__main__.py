"""``python -m benchmarks.ring_target RUN [RUN ...] [--weights ema] [--out FILE.json]``;
``python -m benchmarks.ring_target --cost ITERATIONS``.

For each trained ring run (its eval.json's held-out noise), the K-step samples' per-sample
relative errors e_b = |x_b − x*_b| / |x*_b| against the exact endpoints x*: mean, median,
p95, the fraction sent to a wrong mode (nearest mean ≠ the exact endpoint's) and the share of
the mean those carry; the sampler restarted from exact states on its own times
(``e_from[a]``, as benchmarks/residuals/diagnose.py), and X(x, s, t_end) from s = t_187
(≈ 0.168) along the unit circle between two modes against the exact map (RK4 in ln t).
``--cost`` times the ``flowmap`` recipe's training iterations against the recipe before
(``loss.distance = "l2"``, ``student.x_fourier = 0``): process CPU seconds, one torch thread,
both trainers in this one process, in alternating blocks of 100 iterations.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from odedistill import (
    Trainer,
    build_session,
    load_config,
    load_student,
    make_grid,
    relative_error,
    sample_times,
    solve_reference,
)


def exact_map(system: Any, x: torch.Tensor, s: float, t: float, steps: int = 4000) -> torch.Tensor:
    """x(t) from x(s) = x by classical RK4 in u = ln t (dx/du = t f(x, t)), float64."""

    def g(y: torch.Tensor, u: float) -> torch.Tensor:
        return math.exp(u) * system.f(y, torch.full((y.shape[0],), math.exp(u), dtype=y.dtype))

    y, us = x.double(), torch.linspace(math.log(s), math.log(t), steps + 1).tolist()
    for a, b in zip(us[:-1], us[1:], strict=True):
        h = b - a
        k1 = g(y, a)
        k2 = g(y + h / 2 * k1, a + h / 2)
        k3 = g(y + h / 2 * k2, a + h / 2)
        k4 = g(y + h * k3, b)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


@torch.no_grad()
def diagnose(run: Path, weights: str = "ema") -> dict[str, Any]:
    """The numbers above for one run directory."""
    cfg = load_config(run / "config.toml")
    system = build_session(cfg).system
    model = load_student(run, weights)
    gen = torch.Generator().manual_seed(cfg.eval.seed)
    z = system.sample_initial(cfg.eval.n_heldout, gen, dtype=torch.float64)
    grid = make_grid(cfg.scheme.grid, cfg.scheme.N, system.t_start, system.t_end, cfg.scheme.rho)
    fine = sample_times(grid, 8)  # nests the 1-, 2- and 4-step times
    states = solve_reference(system, z, None, t_eval=fine)
    end = states[-1]
    means = system.teacher.means.double()
    mode_end = torch.cdist(end, means).argmin(1)
    out: dict[str, Any] = {"run": str(run), "weights": weights}
    for K in (1, 2, 4, 8):
        times = sample_times(grid, K)
        x = model.sample(z.float(), None, K, times).double()
        e = (x - end).norm(dim=1) / end.norm(dim=1)
        wrong = torch.cdist(x, means).argmin(1) != mode_end
        starts = [fine.index(s) for s in times[:-1]]
        e_from = [
            relative_error(model.jumps(states[a].float(), None, times[j:]).double(), end)
            for j, a in enumerate(starts)
        ]
        out[f"K{K}"] = {
            "times": times,
            "mean": e.mean().item(),
            "median": e.median().item(),
            "p95": e.quantile(0.95).item(),
            "wrong_mode": wrong.double().mean().item(),
            "wrong_mode_share": (e * wrong).sum().item() / e.sum().item(),
            "e_from": e_from,
        }
    s = float(grid[187 * (cfg.scheme.N - 1) // 249]) if cfg.scheme.N == 250 else float(grid[-2])
    theta = torch.linspace(0, 2 * math.pi / means.shape[0], 21, dtype=torch.float64)
    x = torch.stack([theta.cos(), theta.sin()], 1)
    exact = exact_map(system, x, s, system.t_end)
    full = torch.full((21,), s), torch.full((21,), system.t_end)
    mapped = model.transport(x.float(), *full).double()
    out["scan"] = {
        "s": s,
        "theta_deg": torch.rad2deg(theta).tolist(),
        "exact_deg": torch.rad2deg(torch.atan2(exact[:, 1], exact[:, 0])).tolist(),
        "student_deg": torch.rad2deg(torch.atan2(mapped[:, 1], mapped[:, 0])).tolist(),
    }
    return out


#: the flowmap recipe before its pseudo-Huber loss and state features, and the recipe
SETTINGS = {"before": ["loss.distance=l2", "student.x_fourier=0"], "recipe": []}


def cost(iterations: int, block: int = 100) -> dict[str, Any]:
    """CPU seconds per iteration of each of ``SETTINGS`` and their ratio to 'before'."""
    quiet = ["run.threads=1", "train.log_every=100000", "train.checkpoint_every=100000"]
    seconds = dict.fromkeys(SETTINGS, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            name: Trainer(build_session(load_config("flowmap", quiet + extra)), Path(tmp) / name)
            for name, extra in SETTINGS.items()
        }
        for done in range(block, iterations + block, block):
            for name, trainer in trainers.items():
                t0 = time.process_time()
                trainer.run(iterations=done, show_progress=False)
                seconds[name] += time.process_time() - t0
    per = {name: s / iterations for name, s in seconds.items()}
    return {
        "iterations": iterations,
        "cpu_s_per_iteration": per,
        "ratio": per["recipe"] / per["before"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="trained ring flow-map run directories")
    p.add_argument("--cost", type=int, default=0, help="time this many iterations of each")
    p.add_argument("--weights", default="ema", help="'ema', 'raw' or a rate")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.cost:
        print(json.dumps(cost(args.cost), indent=1))
        return
    results = [diagnose(run, args.weights) for run in args.runs]
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    for r in results:
        k4 = r["K4"]
        print(
            f"{r['run']}: mean {[round(r[f'K{K}']['mean'], 4) for K in (1, 2, 4, 8)]}, 4 steps "
            f"median {k4['median']:.4f} p95 {k4['p95']:.4f} wrong mode {k4['wrong_mode']:.3f}, "
            f"e_from {[round(v, 4) for v in k4['e_from']]}"
        )


if __name__ == "__main__":
    main()
