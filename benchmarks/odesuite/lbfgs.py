"""An L-BFGS phase after Adam on the general-ODE residual: measured against distill() alone.

At an equal budget of B CPU-seconds per system (one thread):
  (a) ``distill(system, tol, max_seconds=B)``: today's defaults (RAdam, full-gradient residual
      |dx/dt − f(x, t)|² by forward-mode AD at continuous times, causal weights);
  (b) ``distill(..., max_seconds=(1 − q) B)`` then L-BFGS (strong-Wolfe line search) on the
      same residual, mean over a fixed full-batch collocation set of (z, cond, t), for q B;
  (c) as (b) with the L-BFGS phase in float64 (the student cast to double).
(b) and (c) share their Adam phase. Scored by the norm-relative error mean|x − x*| / mean|x*|
at t_end on held-out states against ``odedistill.solve_reference`` (DOP853, 1e-10).

    python -m benchmarks.odesuite.lbfgs --systems duffing pendulum3 brusselator vdp --budget 60
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import odedistill
from benchmarks.odesuite.systems import SUITE
from benchmarks.odesuite.training import loadavg, test_set


def residual_mean(model, system, z, cond, t) -> torch.Tensor:
    """Mean over the set of |dx/dt(z, t) − f(x(z, t), t)|² (dx/dt by forward-mode AD)."""
    path = model.path(z, cond)
    y, v = torch.func.jvp(path, (t,), (torch.ones_like(t),))
    return ((v - system.f(y, t, cond)) ** 2).flatten(1).sum(1).mean()


def collocation(system, n: int, seed: int, dtype: torch.dtype):
    """n initial states, their conditions and one uniform time in [t_start, t_end] each."""
    g = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, g, dtype=dtype)
    c = system.sample_condition(n, g)
    c = None if c is None else c.to(dtype)
    t = system.t_start + (system.t_end - system.t_start) * torch.rand(n, generator=g, dtype=dtype)
    return z, c, t


def lbfgs_phase(
    model, system, seconds: float, n: int = 4096, seed: int = 123, dtype=torch.float32
) -> dict[str, Any]:
    """Minimise the mean residual over a fixed set of n collocation points with L-BFGS for
    ``seconds`` CPU-seconds (outer steps of 20 iterations); the model is changed in place.
    A non-finite loss restores the parameters of the last finite one."""
    model.to(dtype).train()
    z, c, t = collocation(system, n, seed, dtype)
    fresh = collocation(system, n, seed + 1, dtype)
    params = [p.requires_grad_(True) for p in model.parameters()]  # the EMA copy is frozen
    opt = torch.optim.LBFGS(
        params, lr=1.0, max_iter=20, history_size=50, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = residual_mean(model, system, z, c, t)
        loss.backward()
        return loss

    def fresh_loss() -> float:
        return float(residual_mean(model, system, *fresh).detach())

    before, before_fresh = float(closure().detach()), fresh_loss()
    good = copy.deepcopy(model.state_dict())
    cpu0, outer, loss = time.process_time(), 0, before
    while time.process_time() - cpu0 < seconds:
        loss = float(opt.step(closure).detach())
        outer += 1
        if not torch.isfinite(torch.tensor(loss)):
            model.load_state_dict(good)
            break
        good = copy.deepcopy(model.state_dict())
    model.eval()
    return {
        "lbfgs_cpu_s": time.process_time() - cpu0,
        "lbfgs_outer": outer,
        "lbfgs_evals": opt.state[params[0]].get("func_evals"),
        "loss_before": before,
        "loss_after": float(closure().detach()),
        "fresh_loss_before": before_fresh,
        "fresh_loss_after": fresh_loss(),
    }


def score(model, name: str, n: int, seed: int, dtype=torch.float32) -> dict[str, float]:
    test = test_set(name, n, seed)
    c = None if test["cond"] is None else test["cond"].to(dtype)
    with torch.no_grad():
        x = model.sample(test["z"].to(dtype), c).double()
    e = odedistill.trajectory_errors(x, test["exact"])
    return {k: e[k] for k in ("error", "median", "p95")}


def train(name: str, budget: float, tol: float, seed: int):
    system = SUITE[name].build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", odedistill.AccuracyWarning)
        cpu0 = time.process_time()
        student = odedistill.distill(
            system, tol=tol, max_seconds=budget, clock="process", seed=seed, progress=False
        )
    return system, student, time.process_time() - cpu0


def run_system(name: str, a: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    common = {"system": name, "budget_cpu_s": a.budget, "seed": a.seed, "points": a.points}

    def row(variant, model, extra, dtype=torch.float32):
        r = {
            **common,
            "variant": variant,
            **extra,
            **score(model, name, a.test_n, a.test_seed, dtype),
        }
        r["loadavg"] = loadavg()
        print(json.dumps(r), flush=True)
        rows.append(r)

    if "adam" in a.variants:
        _, s, cpu = train(name, a.budget, a.tol, a.seed)
        row("adam", s, {"adam_steps": s.validation["steps"], "total_cpu_s": cpu})
    if "lbfgs32" in a.variants or "lbfgs64" in a.variants:
        adam_s = a.budget * (1 - a.lbfgs_share)
        system, s, cpu = train(name, adam_s, a.tol, a.seed)
        row("adam-short", s, {"adam_steps": s.validation["steps"], "total_cpu_s": cpu})
        for v, dtype in (("lbfgs32", torch.float32), ("lbfgs64", torch.float64)):
            if v not in a.variants:
                continue
            m = copy.deepcopy(s)
            info = lbfgs_phase(m, system, a.budget * a.lbfgs_share, a.points, dtype=dtype)
            extra = {"adam_steps": s.validation["steps"], "total_cpu_s": cpu + info["lbfgs_cpu_s"]}
            row(v, m, {**extra, **info}, dtype)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the rows, one line per (system, variant)."""
    out = [
        "| system | variant | points | Adam steps | L-BFGS evals | CPU-s | loss (set) | loss (fresh) "
        "| error | median | p95 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        evals = r.get("lbfgs_evals") or "-"
        points = r.get("points", 4096) if "loss_before" in r else "-"
        loss = fresh = "-"
        if "loss_before" in r:
            loss = f"{r['loss_before']:.2e} → {r['loss_after']:.2e}"
            fresh = f"{r['fresh_loss_before']:.2e} → {r['fresh_loss_after']:.2e}"
        out.append(
            f"| {r['system']} | {r['variant']} | {points} | {r['adam_steps']} | {evals} "
            f"| {r['total_cpu_s']:.0f} | {loss} | {fresh} | {r['error']:.4f} "
            f"| {r['median']:.4f} | {r['p95']:.4f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--systems", nargs="+", default=["duffing", "pendulum3", "brusselator", "vdp"])
    p.add_argument("--variants", nargs="+", default=["adam", "lbfgs32", "lbfgs64"])
    p.add_argument("--budget", type=float, default=60.0)
    p.add_argument("--lbfgs-share", type=float, default=0.25)
    p.add_argument("--points", type=int, default=4096)
    p.add_argument("--tol", type=float, default=1e-2)
    p.add_argument("--test-n", type=int, default=1000)
    p.add_argument("--test-seed", type=int, default=1001)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/odesuite/ablation_lbfgs.jsonl")
    )
    p.add_argument("--table", action="store_true", help="print the table of --out and exit")
    a = p.parse_args(argv)
    if a.table:
        print(table([json.loads(ln) for ln in a.out.read_text().splitlines()]))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for name in a.systems:
        rows = run_system(name, a)
        with a.out.open("a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
