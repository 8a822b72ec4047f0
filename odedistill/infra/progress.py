"""The one progress bar of training, sampling and feature extraction (rich, on stderr)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    enabled: bool = True, fields: Sequence[str] = (), console: Console | None = None
) -> Progress:
    """A bar with the task's description, count, ``fields`` (rich text templates such as
    ``"loss {task.fields[loss]}"``), elapsed time and time remaining. Hidden when not ``enabled``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f) for f in fields),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
    )
