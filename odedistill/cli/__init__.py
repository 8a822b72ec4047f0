"""Command line: ``odedistill run | sample | ...``. Bad input exits 2 with one line on stderr."""

from __future__ import annotations

import importlib
import sys

import click
import typer

from odedistill.cli.app import app
from odedistill.errors import UserError

try:  # typer >= 0.20 bundles its own copy of click; its errors are distinct classes
    from typer import _click as _typer_click
except ImportError:  # pragma: no cover
    _typer_click = click

_USAGE_ERRORS = (click.exceptions.UsageError, _typer_click.exceptions.UsageError)
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)

# Each module registers its commands on ``app`` when imported.
_COMMAND_MODULES = ("run", "sample", "fid", "convert", "eval", "bench")


def _version_callback(value: bool) -> None:
    if value:
        from odedistill import __version__

        typer.echo(f"odedistill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Distill an ODE into a network that solves it in one evaluation (PID)."""


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"odedistill.cli.{name}")


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line of stderr and exit with ``code``."""
    first = " ".join(str(message).split())
    print(f"error: {first}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    _load_commands()
    try:
        app(args=argv, standalone_mode=False)
    except UserError as e:
        fail(str(e))
    except _USAGE_ERRORS as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.exit(0)  # help was printed
        fail(e.format_message())
    except _EXITS as e:
        sys.exit(e.exit_code)
    except _ABORTS:
        fail("aborted", 1)
    except KeyboardInterrupt:
        fail("interrupted; resume with --resume", 130)
