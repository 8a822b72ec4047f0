"""Command line: ``odedistill run | sample | ...``. Bad input exits 2 with one line on stderr."""

from __future__ import annotations

import errno
import importlib
import json
import pickle
import sys
import traceback
import zipfile

import typer

from odedistill.cli.app import app
from odedistill.errors import Interrupted, TrainingDiverged, UserError

#: failures of reading or writing files: bad input or a bad place, not bugs
_IO_ERRORS = (
    OSError,
    zipfile.BadZipFile,
    UnicodeError,
    json.JSONDecodeError,
    pickle.UnpicklingError,
)

# Each module registers its commands on ``app`` when imported.
_COMMAND_MODULES = ("run", "sample", "fid", "convert", "eval")


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


def _io_message(e: BaseException) -> str:
    if isinstance(e, OSError):
        where = e.filename or ""
        if e.errno == errno.ENOSPC:
            return f"disk full while writing {where}; free space there and run again"
        reason = e.strerror or str(e) or type(e).__name__
        return f"{reason}: {where}" if where else reason
    first = str(e).splitlines()[0] if str(e) else ""
    return f"cannot read a file ({type(e).__name__}: {first})"


def main(argv: list[str] | None = None) -> None:
    """Run the application without typer's standalone handling, so that every way out is ours.

    Outside standalone mode typer re-raises usage errors (``typer.TyperException``, the base
    of its parsing errors), raises ``typer.Abort``, and *returns* the exit code of a
    ``typer.Exit`` or of an interrupt (130) instead of exiting. Bad input, unusable files and
    places exit 2 with one line; a diverged run exits 1; an interrupted run 128 + the signal;
    anything else is a bug: its traceback is printed with a request to report it.
    """
    _load_commands()
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as e:
        fail(str(e))
    except TrainingDiverged as e:
        fail(str(e), 1)
    except Interrupted as e:
        fail(str(e), e.exit_code)
    except typer.TyperException as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.exit(0)  # help was printed
        fail(e.format_message(), getattr(e, "exit_code", 2))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        fail("aborted", 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except _IO_ERRORS as e:
        fail(_io_message(e))
    except Exception:
        traceback.print_exc()
        print(
            "error: this is a bug in odedistill; please report it with the command you ran and "
            "the traceback above",
            file=sys.stderr,
        )
        sys.exit(1)
    if code == 130:
        fail("interrupted", 130)
    if isinstance(code, int) and code != 0:
        sys.exit(code)
