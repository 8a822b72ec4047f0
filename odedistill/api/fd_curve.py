"""FID after training (``eval.fid_end``): the student and the teacher's Euler and Heun curves.

Every sampler draws one image per seed 0 … fid_num − 1 from the same noise (z = T·n), so the
student's one-step FID can be read off against the teacher's FID at K evaluations: the
comparison of the PID paper's figures, computed by the FID code path of ``odedistill fid``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from odedistill.evaluation.features import FIDScorer, default_seeds
from odedistill.evaluation.fid import fid_from_stats, load_ref
from odedistill.evaluation.pictures import plot_fid_curve
from odedistill.infra.build import Session
from odedistill.models.base import TrajectoryModel
from odedistill.models.flowmap import FlowMap, sample_times
from odedistill.sampling.samplers import SolverSampler, StudentSampler

FID_PLOT = "fid_vs_nfe.png"


def fid_table(
    session: Session,
    model: TrajectoryModel,
    run_dir: Path | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """FID of ``model`` (a flow map at 1 and ``student.steps`` steps) and of the teacher's
    Euler and Heun at ``eval.fid_nfe`` evaluations, plus the data floor where
    ``eval.fid_floor_ref`` names a second data sample; with ``run_dir``, the plot too."""
    cfg, system = session.cfg, session.system
    e = cfg.eval
    console = console or Console(stderr=True, quiet=True)
    scorer = FIDScorer(
        e.fid_ref,
        e.fid_detector,
        default_seeds(e.fid_num),
        device=session.device,
        progress=progress,
    )
    t0 = time.process_time()
    students: dict[str, float] = {}
    steps = [1, *cfg.student.options.steps] if isinstance(model, FlowMap) else [1]
    colloc = session.grid.double().cpu()
    for K in steps:
        times = None if K == 1 else sample_times(colloc, K)
        sampler = StudentSampler(model, system, times)
        students[str(K)] = scorer.score(sampler, f"FID {sampler.description}")
    teacher: dict[str, dict[str, float]] = {"euler": {}, "heun": {}}
    for method in ("euler", "heun"):
        for nfe in e.fid_nfe:
            sampler = SolverSampler(system, method, nfe, cfg.scheme.grid, cfg.scheme.rho)
            teacher[method][str(nfe)] = scorer.score(sampler, f"FID {sampler.description}")
    table: dict[str, Any] = {
        **scorer.describe(),
        "student": students,
        "teacher": teacher,
        "data_floor": None,
        "cpu_seconds": time.process_time() - t0,
    }
    if e.fid_floor_ref:
        mu, sigma = load_ref(e.fid_floor_ref)
        table["data_floor"] = fid_from_stats(mu, sigma, scorer.mu_ref, scorer.sigma_ref)
        table["data_floor_ref"] = e.fid_floor_ref
    console.print(
        f"FID of {len(steps)} student and {2 * len(e.fid_nfe)} teacher samplers: "
        f"{table['cpu_seconds']:.0f} CPU s"
    )
    if run_dir is not None:
        plot_fid_curve(table, Path(run_dir) / FID_PLOT)
    return table
