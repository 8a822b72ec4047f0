"""``odedistill fid`` and ``fid-ref``: FID against reference statistics, as EDM's fid.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from odedistill.cli.app import app
from odedistill.errors import UserError

# evaluation.fid.DETECTOR_FILE, written out so that `odedistill --help` does not import torch
_DETECTOR_HELP = "Local TorchScript Inception (inception-2015-12-05.pt); see docs/evaluation.md."


def _check_counts(batch: int, num: int | None = None) -> None:
    # Checked here rather than by Typer so that a bad value is a one-line UserError.
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    if num is not None and num < 2:
        raise UserError(f"--num must be at least 2 to compute statistics, got {num}")


@app.command("fid")
def fid_command(
    samples: Annotated[
        Path, typer.Argument(help="Folder of images (searched recursively) or .npz.")
    ],
    ref: Annotated[Path, typer.Option("--ref", help="Reference statistics .npz (mu, sigma).")],
    detector: Annotated[Path, typer.Option("--detector", help=_DETECTOR_HELP)],
    batch: Annotated[int, typer.Option("--batch", help="Images per detector call.")] = 64,
    num: Annotated[
        int | None,
        typer.Option(
            "--num", min=2, help="Use this many images (the protocol: 50000). Default: all."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Picks the --num images when there are more.")
    ] = 0,
    device: Annotated[
        str | None, typer.Option("--device", help="Default: cuda if available.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the result as JSON.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Print the FID of a set of images against reference statistics."""
    from odedistill._io import atomic_write_json
    from odedistill.evaluation.datasets import open_dataset, subset_indices
    from odedistill.evaluation.features import check_detector, dataset_feature_stats
    from odedistill.evaluation.fid import fid_from_stats, load_detector, load_ref
    from odedistill.infra.devices import resolve_device
    from odedistill.infra.rundir import check_writable_file

    _check_counts(batch, num)
    dev = resolve_device(device)
    if out is not None:
        check_writable_file(out, "--out")
    mu_ref, sigma_ref = load_ref(ref)
    net = load_detector(detector, dev)
    dataset = open_dataset(samples)
    first, _ = next(iter(dataset.batches(1)))
    check_detector(net, first.shape[1:], mu_ref.shape[0], detector, ref)
    num_total = dataset.num_images
    if num is not None and num_total is None:
        num_total = sum(len(images) for images, _ in dataset.batches(max(batch, 1024)))
    indices = subset_indices(num_total, num, seed) if num_total is not None else None
    num_used = len(indices) if indices is not None else num_total
    typer.echo(f"{num_used} images from {samples}", err=True)
    stats = dataset_feature_stats(
        dataset, net, batch_size=batch, indices=indices, device=dev, progress=not quiet
    )
    mu, sigma = stats.mu_sigma()
    fid = fid_from_stats(mu, sigma, mu_ref, sigma_ref)
    if out is not None:
        result = {
            "fid": fid,
            "num_images": stats.num,
            "samples": str(samples),
            "ref": str(ref),
            "detector": str(detector),
            "seed": seed if indices is not None else None,
        }
        atomic_write_json(out, result)
    typer.echo(f"{fid:g}")


@app.command("fid-ref")
def fid_ref_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="CIFAR-10 batches folder or .tar.gz, EDM dataset .zip, image folder, .npz, "
            "or downsampled ImageNet batches."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the statistics .npz.")],
    detector: Annotated[Path, typer.Option("--detector", help=_DETECTOR_HELP)],
    split: Annotated[
        str,
        typer.Option(
            "--split", help="CIFAR-10: train|test|all; downsampled ImageNet: train|val|all."
        ),
    ] = "train",
    batch: Annotated[int, typer.Option("--batch", help="Images per detector call.")] = 64,
    device: Annotated[
        str | None, typer.Option("--device", help="Default: cuda if available.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Compute reference statistics (mu, sigma) of a dataset's images."""
    from odedistill.evaluation.datasets import open_dataset
    from odedistill.evaluation.features import dataset_feature_stats
    from odedistill.evaluation.fid import load_detector, save_ref
    from odedistill.infra.devices import resolve_device
    from odedistill.infra.rundir import check_writable_file

    _check_counts(batch)
    dev = resolve_device(device)
    check_writable_file(out, "--out")
    net = load_detector(detector, dev)
    dataset = open_dataset(source, split=split)
    stats = dataset_feature_stats(dataset, net, batch_size=batch, device=dev, progress=not quiet)
    mu, sigma = stats.mu_sigma()
    save_ref(out, mu, sigma)
    typer.echo(f"statistics of {stats.num} images written to {out}", err=True)
