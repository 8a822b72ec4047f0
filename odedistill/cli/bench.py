"""``odedistill bench schemes``: the residual-scheme benchmark (cost, accuracy, order, stability)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from odedistill.cli.app import app

bench_app = typer.Typer(
    help="Benchmarks that write a Markdown report, results.json and plots.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def _bench() -> None:
    """Benchmarks that write a Markdown report, results.json and plots."""


@bench_app.command("schemes")
def schemes_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small settings: a few minutes on two CPU cores.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="'cpu' or 'cuda'.")] = "cpu",
    out: Annotated[
        Path, typer.Option("--out", help="Folder for report.md, results.json and the PNGs.")
    ] = Path("runs/bench-schemes"),
) -> None:
    """Compare the upwind, central and autodiff residual schemes."""
    from odedistill.bench.schemes import default_command, run_scheme_benchmark

    run_scheme_benchmark(
        quick=quick, device=device, out=out, command=default_command(quick, device, out)
    )
