"""A whole run: recipe -> validated config -> training -> checkpoints, eval.json and samples.png."""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from odedistill.api.fd_curve import FID_PLOT, fid_table
from odedistill.api.fid_runs import evaluate_checkpoint
from odedistill.errors import AccuracyWarning, UserError
from odedistill.evaluation.features import FIDScorer, default_seeds
from odedistill.evaluation.pictures import write_samples_png
from odedistill.evaluation.report import evaluate, floor_message, write_eval
from odedistill.infra import distributed
from odedistill.infra.build import Session, build_session, reported_weights, weights_of
from odedistill.infra.checkpoint import latest_checkpoint
from odedistill.infra.devices import resolve_device
from odedistill.infra.recipes import to_toml
from odedistill.infra.rundir import RunLock, check_writable_file, prepare_run, write_run_config
from odedistill.kinds import STUDENTS
from odedistill.sampling.samplers import StudentSampler
from odedistill.training.trainer import Hook, Trainer
from odedistill.training.validation import shortfall


class FIDDuringTraining(Hook):
    """``eval.fid_every``: FID of the checkpoint just written, into fid.json and metrics.jsonl."""

    def __init__(self, session: Session, dist: distributed.DistEnv | None = None) -> None:
        """Loads the reference and the detector and checks them against the student's states
        now, before the first step: a bad input is an error before any training."""
        e = session.cfg.eval
        self.every = e.fid_every
        self.weights = e.fid_weights
        self.scorer: FIDScorer | None = None
        if self.every:
            self.scorer = FIDScorer(
                e.fid_ref,
                e.fid_detector,
                default_seeds(e.fid_num),
                device=session.device,
                progress=False,
                dist=dist,
            )
            self.scorer.check(StudentSampler(session.model, session.system))

    def after_checkpoint(self, trainer: Trainer, path: Path) -> None:
        if not self.every or trainer.step % self.every or self.scorer is None:
            return
        distributed.barrier()  # rank 0's checkpoint is on disk
        records = evaluate_checkpoint(
            trainer.run_dir,
            path,
            weights=self.weights,
            device=trainer.session.device,
            scorer=self.scorer,
            dist=trainer.dist,
            system=trainer.session.system,
        )
        trainer.log.write({"step": trainer.step, "fid": {r["weights"]: r["fid"] for r in records}})


def finish_run(
    session: Session,
    run_dir: Path,
    console: Console,
    validation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the trained students, write eval.json and samples.png, return the report
    (with the run's last ``validation`` summary, where it validated)."""
    cfg = session.cfg
    students = weights_of(session)
    chosen = reported_weights(session)
    report, outputs = evaluate(cfg, session.system, students, chosen, run_dir, console)
    if validation is not None:
        report["validation"] = validation
    if cfg.eval.fid_end:
        report["fid"] = fid_table(session, students[chosen], run_dir, console)
    write_eval(run_dir, report)
    with console.status("drawing samples.png"):
        write_samples_png(
            session.system,
            outputs,
            run_dir / "samples.png",
            students[chosen],
            session.grid,
            grid_size=cfg.eval.grid_size,
            trajectories=cfg.eval.trajectories,
            reference_label=report.get("reference_label", "exact ODE endpoint"),
        )
    return report


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
    Rank 0 holds the run directory's lock for the whole run. Bad input found before the
    first checkpoint leaves no run directory behind.
    """
    main = distributed.env_rank() == 0
    console = console or Console(stderr=True, quiet=not main)
    cfg, run_dir = prepare_run(recipe, overrides or [], out, resume)
    if dry_run:
        if main:
            Console().print(to_toml(cfg), markup=False, highlight=False)
            console.print(f"# run directory: {run_dir} (dry run: nothing written)")
        return None
    env, device, owned = distributed.init_from_env(resolve_device(cfg.run.device))
    try:
        session = build_session(cfg, device)
        with _locked(run_dir, env):
            if not resume and latest_checkpoint(run_dir) is not None:  # won while we waited
                raise UserError(f"{run_dir} already holds a run; pass --resume or another --out")
            return _train_and_evaluate(session, run_dir, env, resume, show_progress, console)
    finally:
        if owned:
            distributed.shutdown()


@contextlib.contextmanager
def _locked(run_dir: Path, env: distributed.DistEnv) -> Iterator[None]:
    """Rank 0 takes the run directory's lock; every rank fails together if it cannot.

    Bad input found before the first checkpoint removes the run directory, but only when this
    process created it (its ``mkdir`` succeeded) and holds its lock: a run refused by another
    run's lock never touches that run's folder.
    """
    lock = RunLock(run_dir)
    created, error = False, None
    if env.is_main:
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                run_dir.mkdir()
                created = True
            except FileExistsError:
                pass
            lock.acquire()
        except UserError as e:
            error = str(e)
    error = distributed.all_gather_objects(error)[0]
    if error is not None:
        raise UserError(error)
    try:
        yield
    except UserError:
        if created and lock.held and latest_checkpoint(run_dir) is None:
            lock.held = False
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


def _train_and_evaluate(
    session: Session,
    run_dir: Path,
    env: distributed.DistEnv,
    resume: bool,
    show_progress: bool,
    console: Console,
) -> dict[str, Any] | None:
    cfg = session.cfg
    if cfg.eval.enabled and env.is_main:  # outputs written after training: checked before it
        for name in ("eval.json", "samples.png", "config.json", "config.toml"):
            check_writable_file(run_dir / name, f"the run's {name}")
    trainer = Trainer(session, run_dir, hooks=[FIDDuringTraining(session, env)])
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
    if trainer.stop_reason:
        console.print(f"stopped at step {trainer.step}: {trainer.stop_reason}")
    summary = trainer.validation.summary(trainer) if trainer.validation else None
    if summary is not None and env.is_main:
        console.print(
            f"validation: norm-relative error {summary['error']:.4g} (median "
            f"{summary['median']:.4g}, p95 {summary['p95']:.4g}), {summary['evaluations']} "
            f"evaluation(s)"
            + (f", tol {summary['tol']:g} met: {summary['met']}" if summary["tol"] else "")
        )
        if summary["tol"] > 0 and not summary["met"]:
            multi = "multi_step" in STUDENTS.get(cfg.student.kind).capabilities
            warnings.warn(shortfall(summary, flowmap=multi), AccuracyWarning, stacklevel=2)
    if not cfg.eval.enabled or not env.is_main:
        return None
    report = finish_run(session, run_dir, console, summary)
    s = report["samplers"]["student"]
    floor = report["data_floor_sliced_w1"]
    against = f"data floor {floor:.4g}" if floor is not None else f"against {report['reference']}"
    console.print(
        f"student (1 step): relative error {s['trajectory_rel_error']:.4g}, "
        f"sliced W1 {s['sliced_w1']:.4g} ({against})"
    )
    if (note := floor_message(report.get("scheme_floor", {}))) is not None:
        console.print(note)
    if "fid" in report:
        f = report["fid"]
        heun = f["teacher"]["heun"]
        best = max(heun, key=int)  # the most evaluations
        console.print(
            f"FID ({f['num_images']} images): student {f['student']['1']:.4g}, teacher Heun "
            f"{best} NFE {heun[best]:.4g}"
            + (f", data floor {f['data_floor']:.4g}" if f["data_floor"] is not None else "")
        )
        console.print(f"wrote {run_dir / FID_PLOT}")
    console.print(f"wrote {run_dir / 'eval.json'} and {run_dir / 'samples.png'}")
    return report
