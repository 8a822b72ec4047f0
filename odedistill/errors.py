"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (recipe, path, option). The CLI prints it on one line and exits 2."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""
