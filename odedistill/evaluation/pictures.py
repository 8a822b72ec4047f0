"""samples.png of a finished run: one-step samples beside exact endpoints, data and (2-D) trajectories."""

from __future__ import annotations

from pathlib import Path

import torch

from odedistill.infra import pictures
from odedistill.models.base import TrajectoryModel
from odedistill.solvers import solve_reference
from odedistill.systems.base import ODESystem


def _student_panels(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """'student, 1 step' (and a flow map's 'student, K steps' for K = 2 and 4)."""
    panels = {"student, 1 step": outputs["student"]}
    for K in (2, 4):
        if f"student@{K}" in outputs:
            panels[f"student, {K} steps"] = outputs[f"student@{K}"]
    return panels


@torch.no_grad()
def write_samples_png(
    system: ODESystem,
    outputs: dict[str, torch.Tensor],
    path: Path,
    model: TrajectoryModel,
    times: torch.Tensor,
    grid_size: int = 8,
    trajectories: int = 8,
    reference_label: str = "exact ODE endpoint",
) -> Path:
    """Image panels (student, the largest-NFE Heun, the reference endpoints, data where the
    system has data), or 2-D scatters with ``trajectories`` student paths through ``times``
    against exact ones. A flow map's 1-, 2- and 4-step samples (``student@K``) stand side by
    side. ``reference_label`` names the reference endpoints (eval.json's ``reference_label``
    for a network teacher: "teacher, Heun K steps")."""
    students = _student_panels(outputs)
    if system.is_image:
        n = min(grid_size**2, outputs["student"].shape[0])
        heun_key = max(
            (k for k in outputs if k.startswith("heun_")),
            default=None,
            key=lambda k: int(k.split("_")[1]),
        )
        panels = {title: x[:n] for title, x in students.items()}
        if heun_key:
            panels[f"teacher Heun, {heun_key.split('_')[1]} NFE"] = outputs[heun_key][:n]
        panels[reference_label] = outputs["exact"][:n]
        if "data" in outputs:
            panels["data"] = outputs["data"][:n]
        return pictures.plot_image_panels(
            {k: v.clamp(-1, 1) for k, v in panels.items()}, path, cols=grid_size
        )
    if system.dim != 2:
        return path
    panels = {"data": outputs["data"]} if "data" in outputs else {}
    panels.update({f"{reference_label}s": outputs["exact"], **students})
    traj = None
    k = min(trajectories, outputs["z"].shape[0])
    if k:
        times = times.double().cpu()
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
        scale = system.data_scale(times)
        if scale is not None:  # the whole path on the data's scale
            student, exact = student * scale[:, None, None], exact * scale[:, None, None]
            title = f"x(t) at data scale, t: {system.t_start:g} -> {system.t_end:g} (student -, exact --)"
        traj = (times, student, exact)
    return pictures.plot_2d(panels, path, traj, traj_title=title if traj else "")


def plot_fid_curve(table: dict, path: Path, title: str = "") -> Path:
    """FID against evaluations: the teacher's Euler and Heun curves, the student's points, and
    the data floor (a line) where there is one; ``table`` is eval.json's 'fid' section."""
    curves = {
        f"teacher, {m.capitalize()}": {int(k): v for k, v in table["teacher"][m].items()}
        for m in ("euler", "heun")
    }
    points = {"student": {int(k): v for k, v in table["student"].items()}}
    return pictures.plot_curves(
        curves,
        points,
        path,
        floor=table.get("data_floor"),
        xlabel="network evaluations",
        ylabel=f"FID ({table.get('num_images', '?')} images)",
        title=title,
    )
