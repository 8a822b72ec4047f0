"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (recipe, path, option). The CLI prints it on one line and exits 2."""


class AccuracyWarning(UserWarning):
    """Training ended (its time or iteration budget spent) before the student's held-out error
    reached the tolerance asked for; the student is returned with ``validation['met']`` False."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after finishing a step and saving a checkpoint.

    ``exit_code`` is 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells
    report a process ended by that signal.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
