"""Library entry point: distil any ODESystem into a student that meets a tolerance, or says it did not.

    distill(system, tol=1e-2, max_seconds=60) -> student,  student.validation = {error, ..., met}

Training stops at the first validation check whose norm-relative error on held-out states,
mean|x − x*| / mean|x*| against the reference solver, is at most ``tol``; if the budget ends
first an ``AccuracyWarning`` names the error reached and what to try.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from odedistill.api.checks import check_distill_args
from odedistill.errors import AccuracyWarning
from odedistill.infra.build import build_session
from odedistill.infra.recipes import from_dict
from odedistill.kinds import STUDENTS
from odedistill.models.base import TrajectoryModel
from odedistill.systems.base import ODESystem
from odedistill.training.trainer import Trainer
from odedistill.training.validation import shortfall

#: N at or below which scheme = 'auto' takes the second-order central scheme for a network
#: teacher (on coarse grids the discretisation error dominates; above, central costs 1.3x per
#: step for no gain)
CENTRAL_UP_TO_N = 32
#: the flow map's jump counts that student = 'auto' tries after one step (each divides N − 1)
AUTO_STEPS = (4,)


def auto_scheme(N: int) -> str:
    """'central' for N <= 32, else 'upwind' (benchmarks/results/odesuite, network teachers)."""
    return "central" if N <= CENTRAL_UP_TO_N else "upwind"


def distill(
    system: ODESystem,
    net: nn.Module | None = None,
    *,
    tol: float = 1e-2,
    max_seconds: float = 60.0,
    clock: str = "process",
    student: str = "pid",
    steps: int = 4,
    scheme: str = "auto",
    times: str = "auto",
    target_grad: str = "auto",
    N: int | None = None,
    grid: str = "auto",
    rho: float = 7.0,
    distance: str = "auto",
    iterations: int = 100_000,
    batch: int = 256,
    lr: float = 1e-3,
    optimizer: str = "radam",
    schedule: str = "cosine",
    warmup: int = 200,
    ema_rate: float = 0.99,
    causal_eps: float = 30.0,
    solved: int = 4096,
    solved_weight: float = 1.0,
    residual_fraction: float = 0.0,
    normalise: bool = True,
    normalise_output: bool = False,
    time_input: str = "unit",
    x_fourier: int | None = None,
    x_fourier_max: float = 4.0,
    width: int = 128,
    depth: int = 3,
    validate_every: int | None = None,
    validate_n: int = 500,
    validate_grow: int = 32,
    stop_at_ratio: float = 0.0,
    hard_states: float = 0.0,
    hard_pool: int = 8,
    hard_weighted: bool = False,
    init: TrajectoryModel | None = None,
    seed: int = 0,
    device: str = "cpu",
    run_dir: str | Path | None = None,
    progress: bool = True,
) -> TrajectoryModel:
    """Train a student of ``system`` until its held-out error is at most ``tol``, and return it.

    The defaults are those that won on the odesuite benchmark (benchmarks/results/odesuite).
    For a general ODE (``system.network_teacher`` False) the reference solver is cheap, so the
    student fits the trajectories of ``solved`` initial states it solved once (the solve counts
    in the budget); with ``residual_fraction`` > 0 (or ``solved=0``) it also (or only) trains
    on the full-gradient residual |dx/dt − f(x, t)|² with dx/dt by forward-mode AD at
    continuous times. For a network teacher (probability-flow, flow-matching ODE) the loss is
    PID's, sg[f] on the grid, data-free.

    Args:
        system: the ODE (any ``ODESystem``; continuous conditions from ``sample_condition``
            reach the student).
        net: the network; by default an MLP of ``width`` x ``depth`` (vectors) or a small UNet.
        tol: the accuracy asked for: norm-relative error mean|x − x*| / mean|x*| of the
            endpoints on ``validate_n`` held-out initial states (0 = train the whole budget).
        max_seconds, clock: the budget, in 'process' (CPU) or 'wall' seconds of training
            steps (0 = none; ``iterations`` caps it too); the learning rate decays over it.
        student: 'pid' (one evaluation, x(z, t_end)), 'flowmap' (the two-time map X(x_s, s, t),
            sampled in ``steps`` equal jumps) or 'auto' (one step first; if that misses ``tol``
            in half the budget, a flow map of ``steps`` jumps gets the other half).
        scheme, times, target_grad: the residual ('auto': 'autodiff', 'continuous', 'through'
            for a general ODE; PID's 'upwind'/'central', 'grid', 'stop' for a network teacher).
        N, grid, rho: the collocation grid (N: 65 for a general ODE, whose continuous times
            only bin the causal weights and place a flow map's jumps; 100 for a network
            teacher; grid 'auto': Karras for the probability-flow ODE, else uniform).
        distance: of the residual and of the solved states' misfit ('auto': 'pseudo_huber',
            close to the norm of the difference, with solved states; else 'l2').
        iterations, batch, lr, optimizer, schedule, warmup, ema_rate: the optimisation; the
            returned model holds the EMA weights.
        causal_eps: causal weighting of the residual along time (0 = off).
        solved, solved_weight, residual_fraction: ``loss.solved`` (general ODEs only; 0 = the
            residual alone): the number of initial states solved by the reference solver
            whose endpoints and trajectories the student fits, that misfit's weight, and the
            share of each batch that also trains on the residual (0: none; 1: all of it).
        normalise, normalise_output, time_input, width, depth: the default MLP.
        x_fourier, x_fourier_max: that MLP's m sinusoidal features of the (standardised)
            state, frequencies log-spaced from 1 to x_fourier_max (``student.x_fourier``; 0 =
            the state as is; None: 32 for a general ODE, where they let the network draw an end
            state that is a sharp function of z, 0 for a network teacher). The largest
            frequency is 4: at 16 the stiff Van der Pol met 1e-2 in 44 s, not 30, and Van der
            Pol missed 1e-3.
        validate_every: iterations between accuracy checks (default 100; 0 for images).
        validate_n, validate_grow: the held-out states of a check, and how many times larger
            the set may grow where the mean error is unsure (its standard error above 5 % of
            it: a heavy tail of rare, large errors); 1 = a fixed set.
        stop_at_ratio: also stop once two checks read error / Euler(N − 1)'s <= this.
        hard_states, hard_pool, hard_weighted: hard-state replay (``train.hard_states``): this
            fraction of each batch drawn again from a pool of ``hard_pool`` batches of recent
            collocation points in proportion to their training loss (0 = off); with
            ``hard_weighted`` importance weights keep the objective's expectation uniform.
        init: a trained student of the same system and network size to start from (a flow
            map from PID's one-step student: its weights, the second-time branch at zero).
        seed, device, run_dir, progress: as named (run_dir: where metrics.jsonl goes).

    Returns:
        The EMA student, in eval mode, with ``student.validation`` = dict(error, median, p95,
        steps, seconds, evaluations, tol, met). ``student.sample(z, cond)`` is the solution
        (a flow map: ``student.sample(z, cond, steps=K)``). Warns with ``AccuracyWarning``
        when ``tol`` was not met.
    """
    check_distill_args(locals())
    if student == "auto":
        return _auto(system, net, tol=tol, max_seconds=max_seconds, steps=steps, **_rest(locals()))
    network = system.network_teacher
    if target_grad == "auto":
        target_grad = "stop" if network else "through"
    if scheme == "auto":
        scheme = auto_scheme(N or 100) if network else "autodiff"
    if times == "auto":
        times = "continuous" if scheme == "autodiff" and target_grad == "through" else "grid"
    if grid == "auto":
        grid = system.default_grid
    if distance == "auto":
        # the solved states' misfit as the norm of the difference, the error's own measure
        distance = "pseudo_huber" if solved > 0 and not network else "l2"
    if N is None:
        N = 100 if network else 65
    if x_fourier is None:
        x_fourier = 0 if network else 32
    if validate_every is None:
        validate_every = 0 if system.is_image else 100
    kind = STUDENTS.get(student)
    flowmap = "multi_step" in kind.capabilities
    K = steps if flowmap else 1
    # a warm start is the one-step student exactly only with that student's anchor
    anchor = "system" if init is not None else "auto"
    cfg = from_dict(
        {
            "run": {"seed": seed, "device": device},
            "student": {
                "kind": student,
                "net": "unet" if system.is_image else "mlp",
                "width": width,
                "depth": depth,
                "normalise": normalise,
                "normalise_output": normalise_output,
                "time": time_input,
                "x_fourier": x_fourier,
                "x_fourier_max": x_fourier_max,
                **({"steps": [K], "skip": "none", "anchor": anchor} if flowmap else {}),
            },
            "scheme": {"kind": scheme, "N": N, "grid": grid, "rho": rho, "times": times},
            "loss": {
                "distance": distance,
                "causal_eps": causal_eps if "causal" in kind.capabilities else 0.0,
                "target_grad": target_grad,
                "solved": 0 if network else solved,
                "solved_weight": solved_weight,
                "residual_fraction": residual_fraction,
            },
            "optim": {
                "name": optimizer,
                "lr": lr,
                "schedule": schedule,
                "warmup": min(warmup, iterations),
                "foreach": True,
            },
            "train": {
                "iterations": iterations,
                "batch": batch,
                "ema_rates": [ema_rate],
                "log_every": min(100, max(1, iterations // 50)),
                "checkpoint_every": iterations,
                "validate_every": validate_every,
                "validate_n": validate_n,
                "validate_grow": validate_grow,
                "validate_steps": K,
                "tol": tol if validate_every else 0.0,
                "stop_at_ratio": stop_at_ratio,
                "hard_states": hard_states,
                "hard_pool": hard_pool,
                "hard_weighted": hard_weighted,
                "max_seconds": max_seconds,
                "clock": clock,
            },
            "eval": {"enabled": False},
        },
        source="distill()",
    )
    session = build_session(cfg, system=system, net=net)
    if init is not None:
        kind.warm_start(session.model, init)
        for copy in session.ema.models.values():
            copy.load_state_dict(session.model.state_dict())
    with tempfile.TemporaryDirectory(prefix="odedistill-") as tmp:
        trainer = Trainer(session, Path(run_dir) if run_dir is not None else Path(tmp))
        trainer.run(show_progress=progress)
        summary = trainer.validation.summary(trainer) if trainer.validation else None
    model = next(iter(session.ema.models.values())).eval().attach(system)  # for check=True
    model.validation = summary
    if summary is not None and tol > 0 and not summary["met"]:
        warnings.warn(shortfall(summary, flowmap=flowmap), AccuracyWarning, stacklevel=2)
    return model


def _rest(args: dict[str, Any]) -> dict[str, Any]:
    """distill()'s keyword arguments other than those ``_auto`` sets itself."""
    own = ("system", "net", "tol", "max_seconds", "steps", "student", "init")
    return {k: v for k, v in args.items() if k not in own}


def _auto(
    system: ODESystem,
    net: nn.Module | None,
    *,
    tol: float,
    max_seconds: float,
    steps: int,
    **kw: Any,
) -> TrajectoryModel:
    """One step with half the budget; if it missed ``tol``, a flow map of ``steps`` jumps
    started from it (``init``) with the rest, and whichever validated better."""
    half = max_seconds / 2 if max_seconds else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        first = distill(system, net, tol=tol, max_seconds=half, student="pid", **kw)
    if first.validation is None or first.validation["met"] or net is not None:
        if first.validation is not None and not first.validation["met"]:
            warnings.warn(shortfall(first.validation), AccuracyWarning, stacklevel=3)
        return first
    spent = first.validation["seconds"]
    rest = max(max_seconds - spent, 1.0) if max_seconds else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        flow = distill(
            system, tol=tol, max_seconds=rest, student="flowmap", steps=steps, init=first, **kw
        )
    best = flow if flow.validation["error"] <= first.validation["error"] else first
    total = {k: first.validation[k] + flow.validation[k] for k in ("steps", "seconds")}
    best.validation = {**best.validation, **total}  # both phases' training
    if not best.validation["met"]:
        multi = best is flow
        warnings.warn(shortfall(best.validation, flowmap=multi), AccuracyWarning, stacklevel=3)
    return best
