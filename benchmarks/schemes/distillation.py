"""Part 2: one-step students of each scheme against the teacher's Euler with N - 1 steps (PID, Theorem 1), per N."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.schemes.settings import BenchSettings, log_default, scheme_names
from benchmarks.schemes.training import LossHistory, open_trainer, recipe, system_recipe, train
from odedistill import (
    ODESystem,
    build_system,
    config_from_dict,
    euler,
    exact_endpoints,
    heun,
    make_grid,
    relative_error,
)


def relative_l2(x: torch.Tensor, x_exact: torch.Tensor) -> float:
    """|x - x_exact| / |x_exact| over the whole set (robust where single |x_exact| are small)."""
    x, x_exact = x.double().flatten(), x_exact.double().flatten()
    return ((x - x_exact).norm() / x_exact.norm().clamp_min(1e-300)).item()


def distillation_accuracy(
    settings: BenchSettings, device: torch.device, log: Callable[[str], None] = log_default
) -> dict[str, Any]:
    """Part 2: one-step students of each scheme against the teacher's Euler (N - 1 steps), per N.

    Every student has the same budget (``distill_iterations``, cosine decay of the learning
    rate to 0) and starts from the same weights; beside them Euler and Heun on the same grid.
    """
    s = settings
    out: dict[str, Any] = {
        "Ns": list(s.distill_Ns),
        "iterations": s.distill_iterations,
        "batch": s.distill_batch,
        "student": f"MLP width {s.distill_width} depth {s.distill_depth}",
        "optimizer": f"Adam lr {s.distill_lr:g}, cosine decay to 0, no EMA",
        "distance": "squared L2",
        "error": "mean over samples of |x - x_exact| / |x_exact| at t_end (rel_l2: the ratio of sums)",
        "heldout": s.distill_heldout,
        "systems": {},
    }
    student = {"net": "mlp", "width": s.distill_width, "depth": s.distill_depth}
    for system_name in s.distill_systems:
        sections, grid_kind = system_recipe(system_name, s)
        cpu_system = build_system(config_from_dict(sections), torch.device("cpu"))
        gen = torch.Generator().manual_seed(12345)
        z = cpu_system.sample_initial(s.distill_heldout, gen, dtype=torch.float64)
        t0 = time.perf_counter()
        x_exact = exact_endpoints(cpu_system, z)
        reference = "closed form" if cpu_system.has_exact_solution else "scipy DOP853 1e-10"
        rows = []
        for N in s.distill_Ns:
            grid = make_grid(grid_kind, N, cpu_system.t_start, cpu_system.t_end)
            x_euler, x_heun = euler(cpu_system, z, grid), heun(cpu_system, z, grid)
            row: dict[str, Any] = {
                "N": N,
                "euler": relative_error(x_euler, x_exact),
                "euler_rel_l2": relative_l2(x_euler, x_exact),
                "euler_nfe": N - 1,
                "heun": relative_error(x_heun, x_exact),
                "heun_rel_l2": relative_l2(x_heun, x_exact),
                "heun_nfe": 2 * (N - 1),
                "students": {},
            }
            for scheme in scheme_names():
                raw = recipe(
                    sections,
                    scheme,
                    N,
                    grid_kind,
                    student,
                    s.distill_batch,
                    s.distill_lr,
                    s.seed,
                    iterations=s.distill_iterations,
                    schedule="cosine",
                )
                history = LossHistory()
                with open_trainer(raw, device, [history]) as trainer:
                    info = train(trainer, s.distill_iterations, history)
                    with torch.no_grad():
                        x = trainer.session.model.sample(z.float().to(device)).double().cpu()
                ok = info["diverged_at"] is None
                err = relative_error(x, x_exact) if ok else float("nan")
                l2 = relative_l2(x, x_exact) if ok else float("nan")
                row["students"][scheme] = {"rel_error": err, "rel_l2": l2, **info}
                log(
                    f"  distill {system_name:8s} N={N:<4d} {scheme:8s} error {err:.4g} "
                    f"(Euler {row['euler']:.4g}) {info['seconds']:.1f}s"
                )
            rows.append(row)
        out["systems"][system_name] = {
            "label": system_label(system_name, cpu_system, grid_kind),
            "grid": grid_kind,
            "reference": reference,
            "reference_seconds": time.perf_counter() - t0,
            "rows": rows,
        }
    return out


def system_label(name: str, system: ODESystem, grid: str) -> str:
    """A one-line description of a benchmark system, read off the system object."""
    span = f"t: {system.t_start:g} -> {system.t_end:g}, {grid} grid"
    if name == "ring":
        D = system.denoiser
        radius = D.means.norm(dim=1).mean().item()
        return (
            f"probability-flow ODE of a ring of {D.num_components} Gaussians (radius {radius:g}, "
            f"std {D.stds[0].item():g}), {span}"
        )
    if name == "linear":
        return f"LinearODE dx/dt = A x, A = {system.A.tolist()}, {span}"
    if name == "pendulum":
        return f"DampedPendulum (gamma {system.gamma:g}, spread {system.spread:g}), {span}"
    return f"{name}, {span}"
