"""``odedistill sample RUN``: one-step samples of a trained student as .npz or a picture."""

from __future__ import annotations

from pathlib import Path

import typer

from odedistill.cli.app import app


@app.command()
def sample(
    run: Path = typer.Argument(..., help="run directory or checkpoint file"),
    n: int = typer.Option(64, "--n", min=1, help="number of samples"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the initial states"),
    out: Path = typer.Option(Path("samples.png"), "--out", help=".npz or .png"),
    weights: str = typer.Option("ema", "--weights", help="'ema' (first rate), 'raw' or a rate"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
) -> None:
    """Draw one-step samples x(z, t_end) from a trained student."""
    from rich.console import Console

    from odedistill.errors import UserError
    from odedistill.sampling import load_student, one_step_samples, save_samples

    if out.suffix not in (".npz", ".png"):
        raise UserError(f"--out must end in .npz or .png, got {out.name}")
    model, system = load_student(run, weights, device)
    x, z, cond = one_step_samples(model, system, n, seed)
    save_samples(out, x, z, cond, system)
    Console(stderr=True).print(f"wrote {n} samples to {out}")
