"""``odedistill run RECIPE``: distil the recipe's ODE into a one-step student."""

from __future__ import annotations

from pathlib import Path

import typer

from odedistill.cli.app import app


@app.command()
def run(
    recipe: Path = typer.Argument(
        Path("quickstart"),
        help="TOML recipe (e.g. recipes/pid_cifar10.toml) or a built-in name (default: quickstart)",
    ),
    out: Path = typer.Option(None, "--out", help="run directory (default: runs/<run.name>)"),
    set_: list[str] = typer.Option([], "--set", help="override a field: section.key=value"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the resolved config; write nothing"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue the run in the run directory"),
    no_progress: bool = typer.Option(False, "--no-progress", help="hide the progress bar"),
) -> None:
    """Train a one-step student with the PID loss, then evaluate it.

    Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and exits with
    130 or 143; --resume continues from there.

    The same command runs data-parallel under torchrun, e.g.
    torchrun --standalone --nproc_per_node 8 -m odedistill run recipes/pid_cifar10.toml
    (docs/scale.md).
    """
    from odedistill.api.run import run_recipe

    run_recipe(recipe, out, set_, dry_run=dry_run, resume=resume, show_progress=not no_progress)
