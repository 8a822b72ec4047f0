"""Pictures: images in [-1, 1] as EDM saves them, image grids, and 2-D scatter panels with trajectories."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from odedistill._io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] as EDM saves them: clip(x·127.5 + 128, 0, 255), truncated to uint8."""
    return (x * 127.5 + 128).clip(0, 255).to(torch.uint8)


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] images (n, C, H, W) as uint8 (n, H, W, C) on the CPU, for PNG files and grids."""
    return to_uint8(images.detach().float().cpu()).permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (n, C, H, W) images in [-1, 1] into one uint8 (rows*H, cols*W, C) picture."""
    u = to_uint8_hwc(images)
    n, H, W, C = u.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, C), 255, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        out[
            pad + r * (H + pad) : pad + r * (H + pad) + H,
            pad + c * (W + pad) : pad + c * (W + pad) + W,
        ] = u[k]
    return out


def save_image_grid(
    images: torch.Tensor, path: str | Path, cols: int | None = None, scale: int = 1
) -> Path:
    """Write a grid of [-1, 1] images as a PNG (nearest-neighbour upscaled by ``scale``)."""
    from PIL import Image

    grid = image_grid(images, cols)
    if grid.shape[2] == 1:
        grid = grid[:, :, 0]
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def plot_image_panels(panels: dict[str, torch.Tensor], path: str | Path, cols: int = 8) -> Path:
    """Side-by-side titled grids of images in [-1, 1] (e.g. student, teacher Heun, data)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, imgs) in zip(np.atleast_1d(axes), panels.items(), strict=True):
        grid = image_grid(imgs, cols)
        ax.imshow(
            grid[:, :, 0] if grid.shape[2] == 1 else grid,
            cmap="gray",
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return _save(fig, path)


def plot_2d(
    panels: dict[str, torch.Tensor],
    path: str | Path,
    trajectories: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    traj_title: str = "trajectories (student -, exact --)",
) -> Path:
    """Scatter panels of 2-D samples, plus one panel of student (solid) vs exact (dashed) paths.

    ``trajectories`` = (times (T,), student (T, n, 2), exact (T, n, 2)).
    """
    k = len(panels) + (trajectories is not None)
    plt = _pyplot()
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k, 3.5))
    axes = np.atleast_1d(axes)
    pts = torch.cat([p.double().reshape(-1, 2) for p in panels.values()])
    lim = float(pts.abs().quantile(0.995)) * 1.15
    for ax, (title, x) in zip(axes, panels.items(), strict=False):
        x = x.double().reshape(-1, 2).numpy()
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_title(title, fontsize=9)
    if trajectories is not None:
        ax = axes[-1]
        _, student, exact = trajectories
        colors = plt.cm.tab10(np.arange(student.shape[1]) % 10)
        for j in range(student.shape[1]):
            ax.plot(exact[:, j, 0], exact[:, j, 1], "--", color=colors[j], lw=1)
            ax.plot(student[:, j, 0], student[:, j, 1], "-", color=colors[j], lw=1, alpha=0.8)
            ax.plot(student[-1, j, 0], student[-1, j, 1], "o", color=colors[j], ms=3)
        ax.set_title(traj_title, fontsize=8)
    for j, ax in enumerate(axes):
        span = lim
        if trajectories is not None and j == len(axes) - 1:  # whole paths, not only their ends
            paths = torch.cat([trajectories[1].reshape(-1, 2), trajectories[2].reshape(-1, 2)])
            span = max(lim, float(paths.abs().max()) * 1.05)
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_aspect("equal")
    return _save(fig, path)


def plot_curves(
    curves: dict[str, dict[int, float]],
    points: dict[str, dict[int, float]],
    path: str | Path,
    floor: float | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
) -> Path:
    """Lines (``curves``) and markers (``points``) of y against x on log-log axes, with an
    optional horizontal ``floor``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, c in curves.items():
        xs = sorted(c)
        ax.plot(xs, [c[x] for x in xs], "-", marker=".", label=name)
    markers = "*sDv^o"
    for k, (name, c) in enumerate(points.items()):
        xs = sorted(c)
        ax.plot(xs, [c[x] for x in xs], markers[k % len(markers)], ms=10, ls="--", label=name)
    if floor is not None:
        ax.axhline(floor, color="gray", ls=":", label="data floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
