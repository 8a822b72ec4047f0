"""A whole run: recipe -> validated config -> training -> checkpoints, eval.json and samples.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from odedistill.errors import UserError
from odedistill.evaluation import plots
from odedistill.evaluation.report import evaluate, write_eval
from odedistill.models.base import TrajectoryModel
from odedistill.solvers import solve_reference
from odedistill.systems.probability_flow import ProbabilityFlowODE
from odedistill.training import build, distributed
from odedistill.training.checkpoint import latest_checkpoint
from odedistill.training.config import Config, from_dict, load_config, to_toml
from odedistill.training.loop import (
    Session,
    Trainer,
    build_session,
    chosen_student,
    write_run_config,
)

#: fields a resumed run may change; everything else must match the saved config
RESUMABLE_CHANGES = (
    "train.iterations",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.sample_every",
    "train.micro_batch",
    "train.tf32",
    "train.channels_last",
    "train.compile",
    "train.checkpoint_activations",
    "run.device",
)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b.get(s, {}).get(k)]


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / cfg.run.name


def students_of(session: Session) -> dict[str, TrajectoryModel]:
    """The raw student and one model per EMA rate, named 'raw' and 'ema<rate>'."""
    out: dict[str, TrajectoryModel] = {"raw": session.model}
    for key, model in session.ema.models.items():
        out[f"ema{key}"] = model
    return out


@torch.no_grad()
def write_pictures(
    session: Session, outputs: dict[str, torch.Tensor], run_dir: Path, model: TrajectoryModel
) -> Path:
    """samples.png: student one-step samples beside exact endpoints, data and (2-D) trajectories."""
    cfg, system = session.cfg, session.system
    path = run_dir / "samples.png"
    if system.is_image:
        n = min(cfg.eval.grid_size**2, outputs["student"].shape[0])
        heun_key = max(
            (k for k in outputs if k.startswith("heun_")),
            default=None,
            key=lambda k: int(k.split("_")[1]),
        )
        panels = {"student, 1 step": outputs["student"][:n]}
        if heun_key:
            panels[f"teacher Heun, {heun_key.split('_')[1]} NFE"] = outputs[heun_key][:n]
        panels["exact ODE endpoint"] = outputs["exact"][:n]
        panels["data"] = outputs["data"][:n]
        return plots.plot_image_panels(
            {k: v.clamp(-1, 1) for k, v in panels.items()}, path, cols=cfg.eval.grid_size
        )
    if system.dim != 2:
        return path
    panels = {
        "data": outputs["data"],
        "exact ODE endpoints": outputs["exact"],
        "student, 1 step": outputs["student"],
    }
    traj = None
    k = min(cfg.eval.trajectories, outputs["z"].shape[0])
    if k:
        times = session.grid.double().cpu()
        z = outputs["z"][:k]
        dev = next(model.parameters()).device
        student = torch.stack(
            [
                model(z.float().to(dev), torch.full((k,), float(t), device=dev)).double().cpu()
                for t in times
            ]
        )
        exact = solve_reference(system, z, t_eval=times.tolist(), rtol=1e-8, atol=1e-8)
        title = "trajectories (student -, exact --)"
        if isinstance(system, ProbabilityFlowODE):
            # x(t) ~ data + t n: dividing by sqrt(1 + t^2) brings the whole path to data scale
            scale = (1 + times**2).rsqrt()[:, None, None]
            student, exact = student * scale, exact * scale
            title = (
                f"x(t)/sqrt(1+t^2), t: {system.t_start:g} -> {system.t_end:g} (student -, exact --)"
            )
        traj = (times, student, exact)
    return plots.plot_2d(panels, path, traj, traj_title=title if traj else "")


def finish_run(session: Session, run_dir: Path, console: Console) -> dict[str, Any]:
    """Evaluate the trained students, write eval.json and samples.png, return the report."""
    cfg = session.cfg
    students = students_of(session)
    chosen = chosen_student(cfg)
    with console.status("evaluating against the exact solution"):
        report, outputs = evaluate(cfg, session.system, students, chosen)
        write_eval(run_dir, report)
        write_pictures(session, outputs, run_dir, students[chosen])
    return report


def prepare_config(
    recipe: str | Path, overrides: list[str], out: str | Path | None, resume: bool
) -> tuple[Config, Path]:
    """Validate the recipe and decide the run directory, refusing to clobber a run."""
    cfg = load_config(recipe, overrides)
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    saved = run_dir / "config.json"
    if resume:
        if not saved.is_file() or latest_checkpoint(run_dir) is None:
            raise UserError(
                f"nothing to resume in {run_dir}: no saved run there; drop --resume "
                "or point --out at the run directory"
            )
        stored = json.loads(saved.read_text())
        changed = [
            k
            for k in _differences(cfg.to_dict(), stored)
            if k not in RESUMABLE_CHANGES and not k.startswith("eval.")
        ]
        if changed:
            raise UserError(
                f"the recipe differs from the saved run in {', '.join(changed)}; resume with the "
                f"recipe the run was started with (see {saved})"
            )
        from_dict(stored)  # the saved config must still be valid
    elif latest_checkpoint(run_dir) is not None:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or --out "
            "to start a new one"
        )
    return cfg, run_dir


def run_recipe(
    recipe: str | Path,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    dry_run: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any] | None:
    """The ``odedistill run`` command as a function. Returns the eval report (or None).

    Under torchrun (WORLD_SIZE > 1) every process calls it: they join one process group,
    train data-parallel, and only rank 0 prints, writes the run directory and evaluates.
    """
    main = distributed.env_rank() == 0
    console = console or Console(stderr=True, quiet=not main)
    cfg, run_dir = prepare_config(recipe, overrides or [], out, resume)
    if dry_run:
        if main:
            Console().print(to_toml(cfg), markup=False, highlight=False)
            console.print(f"# run directory: {run_dir} (dry run: nothing written)")
        return None
    env, device, owned = distributed.init_from_env(build.resolve_device(cfg.run.device))
    try:
        return _train_and_evaluate(cfg, run_dir, device, env, resume, show_progress, console)
    finally:
        if owned:
            distributed.shutdown()


def _train_and_evaluate(
    cfg: Config,
    run_dir: Path,
    device: torch.device,
    env: distributed.DistEnv,
    resume: bool,
    show_progress: bool,
    console: Console,
) -> dict[str, Any] | None:
    session = build_session(cfg, device)
    trainer = Trainer(session, run_dir)
    if resume:
        step = trainer.resume()
        console.print(f"resuming {run_dir} from step {step}")
    if env.is_main:
        write_run_config(cfg, run_dir)
    world = f", {env.world_size} processes" if env.enabled else ""
    console.print(
        f"[bold]odedistill[/] {cfg.run.name}: {cfg.scheme.kind} scheme, N={cfg.scheme.N}, "
        f"{sum(p.numel() for p in session.model.parameters()):,} parameters, "
        f"{cfg.train.precision}, device {session.device}{world} -> {run_dir}"
    )
    trainer.run(show_progress=show_progress and env.is_main, console=console)
    if not cfg.eval.enabled or not env.is_main:
        return None
    report = finish_run(session, run_dir, console)
    s = report["samplers"]["student"]
    console.print(
        f"student (1 step): relative error {s['trajectory_rel_error']:.4g}, "
        f"sliced W1 {s['sliced_w1']:.4g} (data floor {report['data_floor_sliced_w1']:.4g})"
    )
    console.print(f"wrote {run_dir / 'eval.json'} and {run_dir / 'samples.png'}")
    return report
