"""Part 'fid': ``odedistill fid`` on ``fid_images`` generated images with a random Inception stand-in.

The images are the one-step samples of the torchrun part's run A by seed
(``odedistill sample RUN --seeds 0-9999 --out samples.npz``), or, when that run is missing,
uniform random uint8 images. The detector is a random TorchScript module with the interface of
EDM's ``inception-2015-12-05.pt``: uint8 (N, 3, H, W) in, resized to ``detector_resolution``
square, and 2048 features out with ``return_features=True``, through five stride-2 3 x 3
convolutions; its FLOPs per image are counted and recorded beside the images/s (Inception-v3's
are about 11.5 GFLOP, so the real detector costs more).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu.measure import Deadline, PartLog, timed_cli
from benchmarks.gpu.settings import Settings


class RandomInception(nn.Module):
    """uint8 images -> features (``return_features=True``) or softmax over 1008 classes."""

    def __init__(self, resolution: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.resolution = resolution
        layers: list[nn.Module] = []
        c = 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1008)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.to(torch.float32) / 127.5 - 1
        x = nn.functional.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear")
        f = self.features(x).mean(dim=(2, 3))
        if return_features:
            return f
        return torch.softmax(self.head(f), dim=1)


def make_detector(path: Path, settings: Settings) -> dict[str, Any]:
    torch.manual_seed(0)
    net = RandomInception(settings.detector_resolution, settings.detector_widths).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), return_features=True)
    with warnings.catch_warnings():  # TorchScript is deprecated; EDM's detector is one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(path))
    return {
        "resolution": settings.detector_resolution,
        "widths": list(settings.detector_widths),
        "features": settings.detector_widths[-1],
        "flops_per_image": counter.get_total_flops(),
    }


def part_fid(settings: Settings, work: Path, log: PartLog, dl: Deadline) -> None:
    det = work / "random-inception.pt"
    log.put("detector", make_detector(det, settings))
    n = settings.fid_images
    images = work / "fid_samples.npz"
    run = work / "run_a"
    if (run / "checkpoints").is_dir():
        code, wall = timed_cli(
            [
                "sample",
                str(run),
                "--seeds",
                f"0-{n - 1}",
                "--out",
                str(images),
                "--batch",
                str(min(n, 1000)),
            ]
        )
        log.put(
            "images",
            {
                "source": f"odedistill sample run_a --seeds 0-{n - 1}",
                "returncode": code,
                "wall_s": wall,
                "images_per_s": n / wall if code == 0 else None,
            },
        )
    if not images.is_file():
        rng = np.random.default_rng(0)
        side = 32
        np.savez(images, images=rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8))
        log.put("images", {"source": "uniform random uint8 (no run to sample)"})
    ref = work / "fid_ref.npz"
    code, wall = timed_cli(
        [
            "fid-ref",
            str(images),
            "--out",
            str(ref),
            "--detector",
            str(det),
            "--batch",
            str(settings.fid_batch),
            "--quiet",
        ]
    )
    log.put("fid_ref", {"returncode": code, "wall_s": wall})
    runs = []
    for _ in range(2):  # the second run has the detector's kernels warm
        if runs and dl.left() < 2 * runs[-1]["wall_s"]:
            break
        out = work / "fid.json"
        code, wall = timed_cli(
            [
                "fid",
                str(images),
                "--ref",
                str(ref),
                "--detector",
                str(det),
                "--batch",
                str(settings.fid_batch),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        runs.append({"returncode": code, "wall_s": wall, "images_per_s": n / wall})
        if code == 0:
            runs[-1]["fid"] = json.loads(out.read_text()).get("fid")
        log.put(
            "fid",
            {
                "command": f"odedistill fid fid_samples.npz --ref fid_ref.npz --detector "
                f"random-inception.pt --batch {settings.fid_batch}",
                "images": n,
                "runs": runs,
            },
        )
