"""End-of-run evaluation: one-step student against the ODE's endpoints (exact, or a network
teacher's Heun) and few-step teacher solvers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from odedistill._io import atomic_write_json
from odedistill.evaluation.endpoints import teacher_endpoints, teacher_key
from odedistill.evaluation.metrics import relative_error, sliced_w1
from odedistill.grids import make_grid
from odedistill.infra.config import Config
from odedistill.infra.schema import flat
from odedistill.kinds import STUDENTS
from odedistill.models.base import TrajectoryModel
from odedistill.models.flowmap import FlowMap, sample_times
from odedistill.schemes import SCHEMES
from odedistill.solvers import euler, heun, heun_nfe, solve_reference
from odedistill.systems.base import ODESystem


def exact_endpoints(
    system: ODESystem,
    z: torch.Tensor,
    cond: torch.Tensor | None = None,
    heun_grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """x(t_end) from z in closed form where the system has one, else from the scipy reference,
    or, given ``heun_grid``, from Heun's method through it (``eval.reference = 'heun'``)."""
    if system.has_exact_solution:
        t = torch.full((z.shape[0],), system.t_end, dtype=torch.float64)
        return system.exact_solution(z.double(), t, cond)
    if heun_grid is not None:
        return heun(system, z.double(), heun_grid, cond).double()
    return solve_reference(system, z, cond)


def reference_name(system: ODESystem, heun_grid: torch.Tensor | None) -> str:
    """What eval.json's ``reference`` says the endpoints came from."""
    if system.has_exact_solution:
        return "closed form"
    if heun_grid is not None:
        return f"{reference_label(system, heun_grid)} through the collocation grid"
    return "scipy DOP853 rtol=atol=1e-10"


def reference_label(system: ODESystem, heun_grid: torch.Tensor | None) -> str:
    """The reference endpoints' name in pictures: exact only when they are."""
    if heun_grid is not None and not system.has_exact_solution:
        return f"teacher, Heun {len(heun_grid) - 1} steps"
    return "exact ODE endpoint"


def own_data(system: ODESystem, n: int, generator: torch.Generator) -> torch.Tensor | None:
    """``n`` samples of the system's own distribution at t_end, or None where it has none."""
    try:
        return system.sample_data(n, generator).double()
    except NotImplementedError:
        return None


def true_data(
    system: ODESystem,
    n: int,
    generator: torch.Generator,
    heun_grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fresh samples of the distribution at t_end: the system's own, or exact endpoints of fresh z."""
    data = own_data(system, n, generator)
    if data is not None:
        return data
    z = system.sample_initial(n, generator, dtype=torch.float64)
    return exact_endpoints(system, z, system.sample_condition(n, generator), heun_grid)


def heun_grid_points(nfe: int) -> tuple[int, bool]:
    """Grid size and last-step-Euler flag for a Heun solve of exactly ``nfe`` evaluations."""
    if nfe == 1:
        return 2, True
    steps = (nfe + 1) // 2
    return steps + 1, nfe % 2 == 1


@torch.no_grad()
def evaluate(
    cfg: Config,
    system: ODESystem,
    students: dict[str, TrajectoryModel],
    chosen: str,
    run_dir: Path | None = None,
    console: Console | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Compute eval.json's content and the arrays the pictures need.

    ``students`` maps names ('raw', 'ema0.999', ...) to models; ``chosen`` is the one
    reported as 'student'. Every sampler starts from the same held-out z. A system without
    data of its own and ``eval.reference = 'heun'`` (a network teacher) is measured against the
    teacher's Heun endpoints, computed once and cached in ``run_dir``; its report has no data
    floor and calls nothing exact.
    """
    e = cfg.eval
    gen = torch.Generator().manual_seed(e.seed)
    z = system.sample_initial(e.n_heldout, gen, dtype=torch.float64)
    cond = system.sample_condition(e.n_heldout, gen)
    N = cfg.scheme.N
    colloc = make_grid(cfg.scheme.grid, N, system.t_start, system.t_end, cfg.scheme.rho)
    heun_grid = colloc if e.reference == "heun" else None
    data = own_data(system, e.n_heldout, gen)
    # without data of its own, a numerical teacher's endpoints are the only reference: computed
    # once (cached in the run folder), and nothing is called data or exact
    teacher_only = data is None and heun_grid is not None and not system.has_exact_solution
    label = reference_label(system, heun_grid)
    if teacher_only:
        key = teacher_key(flat(cfg.teacher), e.seed, colloc)
        x_exact, cost = teacher_endpoints(system, z, cond, colloc, label, key, run_dir, console)
        ref_seconds = cost["seconds"]
        data = data2 = None
    else:
        # the system's own data is drawn before the reference solve, as true_data would: the
        # generator's stream (and so eval.json) is the same as when both came from true_data
        t0 = time.perf_counter()
        x_exact = exact_endpoints(system, z, cond, heun_grid)
        ref_seconds = time.perf_counter() - t0
        cost = None
        if data is None:
            data = true_data(system, e.n_heldout, gen, heun_grid)
        data2 = true_data(system, e.n_heldout, gen, heun_grid)
    against = x_exact if data is None else data

    def entry(x: torch.Tensor, nfe: int) -> dict[str, Any]:
        return {
            "nfe": nfe,
            "trajectory_rel_error": relative_error(x, x_exact),
            "sliced_w1": sliced_w1(x, against, seed=e.seed),
        }

    samplers: dict[str, Any] = {}
    outputs: dict[str, torch.Tensor] = {"z": z, "exact": x_exact}
    if data is not None:
        outputs["data"] = data
    extra: dict[str, Any] = {}
    for name, model in students.items():
        dev = next(model.parameters()).device
        c = None if cond is None else cond.to(dev)
        x = model.sample(z.float().to(dev), c).double().cpu()
        key = "student" if name == chosen else f"student_{name}"
        samplers[key] = entry(x, 1)
        if name != chosen:
            continue
        outputs["student"] = x
        kind, options = STUDENTS.get(cfg.student.kind), cfg.student.options
        steps = kind.eval_steps(options)
        for K in steps:
            times = sample_times(colloc, K)
            xK = model.sample(z.float().to(dev), c, K, times).double().cpu()
            samplers[f"student@{K}"] = {**entry(xK, K), "times": times}
            outputs[f"student@{K}"] = xK
        if "two_times" in kind.capabilities:
            extra["flow_map"] = flow_map_errors(model, system, z, cond, colloc, steps)
    samplers[f"teacher_euler_{N - 1}"] = entry(euler(system, z, colloc, cond), N - 1)
    for nfe in e.nfe:
        g = make_grid(cfg.scheme.grid, nfe + 1, system.t_start, system.t_end, cfg.scheme.rho)
        samplers[f"euler_{nfe}"] = entry(euler(system, z, g, cond), nfe)
        points, last_euler = heun_grid_points(nfe)
        g = make_grid(cfg.scheme.grid, points, system.t_start, system.t_end, cfg.scheme.rho)
        x_heun = heun(system, z, g, cond, last_step_euler=last_euler)
        assert heun_nfe(points, last_euler) == nfe
        samplers[f"heun_{nfe}"] = entry(x_heun, nfe)
        outputs[f"heun_{nfe}"] = x_heun
    report: dict[str, Any] = {"samplers": samplers}
    if "student" in samplers:
        report["scheme_floor"] = scheme_floor(cfg.scheme.kind, samplers, N - 1)
    if teacher_only:
        report["reference_label"] = label
        report["data_floor_sliced_w1"] = None  # no data: the floor is not defined
        report["reference_cost"] = cost
    else:
        report["exact_solution"] = {
            "rel_error": 0.0,
            "sliced_w1": sliced_w1(x_exact, data, seed=e.seed),
        }
        report["data_floor_sliced_w1"] = sliced_w1(data2, data, seed=e.seed)
    report.update(
        n_heldout=e.n_heldout,
        student_weights=chosen,
        reference=reference_name(system, heun_grid),
        reference_seconds=ref_seconds,
        **extra,
    )
    return report, outputs


#: a first-order student within this factor of the teacher's Euler over its grid is at its floor
FLOOR_FACTOR = 1.5


def scheme_floor(scheme: str, samplers: dict[str, Any], steps: int) -> dict[str, Any]:
    """Whether the student's error is the residual scheme's own limit.

    A student with zero first-order (upwind) residual on the collocation grid is the
    teacher's explicit Euler solution through that grid (Tee et al. 2024, Theorem 1): trained
    well, its samples level off at that solution's error, however long it trains and however
    many steps it samples in. ``at_floor``: the scheme is first order and the student's best
    error (over its samplers) is within FLOOR_FACTOR of that Euler error.
    """
    order = SCHEMES.get(scheme).order
    grid = samplers[f"teacher_euler_{steps}"]["trajectory_rel_error"]
    best = min(
        e["trajectory_rel_error"]
        for k, e in samplers.items()
        if k == "student" or k.startswith("student@")
    )
    return {
        "scheme": scheme,
        "order": order,
        "grid_euler_steps": steps,
        "grid_euler_rel_error": grid,
        "student_best_rel_error": best,
        "at_floor": bool(order == 1 and best <= FLOOR_FACTOR * grid),
    }


def floor_message(floor: dict[str, Any]) -> str | None:
    """One line for a student at its scheme's floor (``scheme_floor``), else None."""
    if not floor.get("at_floor"):
        return None
    return (
        f"note: the student ({floor['student_best_rel_error']:.3g} at best) is at the "
        f"{floor['scheme']} scheme's floor: a first-order residual trains it toward the "
        f"teacher's Euler through the {floor['grid_euler_steps']}-step collocation grid, "
        f"{floor['grid_euler_rel_error']:.3g} off; scheme.kind = 'central' or a larger scheme.N "
        "lowers it"
    )


@torch.no_grad()
def flow_map_errors(
    model: FlowMap,
    system: ODESystem,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    grid: torch.Tensor,
    steps: list[int],
) -> dict[str, Any]:
    """The flow map itself against the exact one, on the jumps its samplers make and more.

    On the finest sampler's times s_0 > … > s_K, the exact states x(s_a) of each held-out
    trajectory are computed (closed form or scipy); every jump a < b is then checked:
    X(x(s_a), s_a, s_b) against x(s_b). Reports the mean relative error over all jumps, over
    the one-step jumps (a → a + 1) and over the jumps to the end (a → K).
    """
    times = sample_times(grid, max([1, *steps]))
    t = torch.tensor(times, dtype=torch.float64)
    if system.has_exact_solution:
        states = torch.stack(
            [system.exact_solution(z.double(), ti.expand(len(z)), cond) for ti in t]
        )
    else:
        states = solve_reference(system, z, cond, t_eval=times)
    dev = next(model.parameters()).device
    c = None if cond is None else cond.to(dev)
    errors: dict[tuple[int, int], float] = {}
    K = len(times) - 1
    for a in range(K):
        x_a = states[a].float().to(dev)
        s_a = torch.full((len(z),), times[a], device=dev)
        for b in range(a + 1, K + 1):
            t_b = torch.full((len(z),), times[b], device=dev)
            x = model.transport(x_a, s_a, t_b, c).double().cpu()
            errors[(a, b)] = relative_error(x, states[b])

    def mean(pairs: list[tuple[int, int]]) -> float:
        return sum(errors[p] for p in pairs) / len(pairs)

    return {
        "times": times,
        "jumps": len(errors),
        "rel_error": mean(list(errors)),
        "rel_error_one_step": mean([(a, a + 1) for a in range(K)]),
        "rel_error_to_end": mean([(a, K) for a in range(K)]),
    }


def write_eval(run_dir: Path, report: dict[str, Any]) -> Path:
    return atomic_write_json(Path(run_dir) / "eval.json", report)
