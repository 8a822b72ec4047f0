"""The scheme benchmark's PNG plots, one per part, drawn from its results (every scheme in them, upwind the reference)."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.schemes.settings import REFERENCE  # noqa: E402
from odedistill import atomic_write_bytes, image_grid  # noqa: E402

PLOTS = {
    "derivative": "derivative_error.png",
    "distillation": "distillation_error.png",
    "cost": "cost.png",
    "stability": "stability.png",
    "samples": "stability_samples.png",
}


def color(names: list[str], name: str) -> str:
    """The colour of a scheme: matplotlib's cycle in the order of ``names`` (upwind C0, blue)."""
    return f"C{names.index(name) % 10}"


def _save(fig: plt.Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_derivative(d: dict[str, Any], path: Path) -> Path:
    names = list(d["declared_order"])
    trajs = d["trajectories"]
    fig, axes = plt.subplots(1, len(trajs), figsize=(4.2 * len(trajs), 3.6))
    Ns = np.array(d["Ns"], dtype=float)
    for ax, (_key, t) in zip(np.atleast_1d(axes), trajs.items(), strict=True):
        for name in names:
            errs = np.maximum(np.array(t["schemes"][name]["errors"]), 1e-17)
            p = t["schemes"][name]["fitted_order"]
            lab = f"{name} (p = {p:.2f})" if p is not None else f"{name} (exact)"
            ax.loglog(Ns, errs, "o-", color=color(names, name), label=lab, ms=4)
        e0 = t["schemes"][REFERENCE]["errors"][0]
        for p, style in ((1, ":"), (2, "--")):
            ax.loglog(Ns, e0 * (Ns / Ns[0]) ** -p, style, color="gray", lw=0.8, label=f"N^-{p}")
        ax.set_title(textwrap.fill(t["label"], 46), fontsize=8)
        ax.set_xlabel("N (Karras grid points)")
        ax.set_ylabel("max relative error of dx/dt")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_distillation(d: dict[str, Any], path: Path) -> Path:
    systems = d["systems"]
    fig, axes = plt.subplots(1, len(systems), figsize=(4.2 * len(systems), 3.6))
    for ax, (_key, sysd) in zip(np.atleast_1d(axes), systems.items(), strict=True):
        names = list(sysd["rows"][0]["students"])
        Ns = [r["N"] for r in sysd["rows"]]
        for name in names:
            errs = [r["students"][name]["rel_error"] for r in sysd["rows"]]
            ax.loglog(Ns, errs, "o-", color=color(names, name), label=f"student, {name}", ms=4)
        ax.loglog(Ns, [r["euler"] for r in sysd["rows"]], "k--", label="teacher Euler, N-1 steps")
        ax.loglog(Ns, [r["heun"] for r in sysd["rows"]], "k:", label="teacher Heun, N-1 steps")
        ax.set_title(textwrap.fill(sysd["label"], 46), fontsize=8)
        ax.set_xlabel("N (collocation points)")
        ax.set_ylabel("relative error of x(t_end)")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_cost(c: dict[str, Any], path: Path) -> Path:
    nets = c["nets"]
    names = list(next(iter(nets.values()))["schemes"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    width = 0.8 / len(names)
    x = np.arange(len(nets))
    for k, name in enumerate(names):
        tr = [n["schemes"][name]["time_ratio"] for n in nets.values()]
        mr = [n["schemes"][name]["memory_ratio"] or np.nan for n in nets.values()]
        axes[0].bar(x + k * width, tr, width, color=color(names, name), label=name)
        axes[1].bar(x + k * width, mr, width, color=color(names, name), label=name)
    for ax, title in zip(
        axes, ("time per iteration / upwind", "peak step memory / upwind"), strict=True
    ):
        ax.set_xticks(x + width * (len(names) - 1) / 2, list(nets))
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_stability(s: dict[str, Any], path: Path) -> Path:
    names = list(s["schemes"])
    keys = [
        ("saturated", "fraction of pixels |x| > 1"),
        ("far_saturated", "fraction of pixels |x| > 1.25"),
        ("std", "std of pixel values"),
        ("rel_error", "relative error to exact endpoint"),
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.4))
    ref = s["reference"]["exact_endpoints"]
    for ax, (key, title) in zip(axes, keys, strict=True):
        for name in names:
            track = s["schemes"][name]["track"]
            ax.plot(
                [p["step"] for p in track],
                [p[key] for p in track],
                "o-",
                color=color(names, name),
                label=name,
                ms=3,
            )
        if key != "rel_error":
            ax.axhline(ref[key], color="k", ls="--", lw=0.8, label="exact endpoints")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_samples(pictures: dict[str, torch.Tensor], path: Path) -> Path:
    """Final one-step samples of each scheme beside exact endpoints and data (clamped to [-1, 1])."""
    fig, axes = plt.subplots(1, len(pictures), figsize=(2.6 * len(pictures), 3.0))
    for ax, (title, x) in zip(np.atleast_1d(axes), pictures.items(), strict=True):
        g = image_grid(x.float().clamp(-1, 1), cols=8)
        ax.imshow(g[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(
            title if title in ("exact endpoint", "data") else f"student, {title}", fontsize=9
        )
        ax.axis("off")
    return _save(fig, path)
