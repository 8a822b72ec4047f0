"""The Typer application that every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="odedistill",
    help="Distill an ODE into a network that solves it in one evaluation (PID).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
