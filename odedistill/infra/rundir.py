"""Run directories: where a recipe's run goes, whether it may start or resume there, and who holds it.

A run directory belongs to one process at a time (``RunLock``: an exclusive lock file with the
holder's PID; a lock whose process is gone is stale and taken over). A fresh run refuses a
directory that holds checkpoints; a resumed run must keep every field of the saved recipe
except those in ``RESUMABLE_CHANGES``.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from odedistill._io import atomic_write_json, atomic_write_text
from odedistill.errors import UserError
from odedistill.infra.checkpoint import latest_checkpoint
from odedistill.infra.config import SECTIONS, Config
from odedistill.infra.recipes import from_dict, load_config, to_toml
from odedistill.infra.schema import kinds_of

#: fields a resumed run may change (with why); everything else must match the saved recipe
RESUMABLE_CHANGES: dict[str, str] = {
    "optim.lr": "lower it after a divergence",
    "optim.grad_clip": "clip after a divergence",
    "optim.schedule": "the learning rate is set every step from the schedule",
    "optim.warmup": "the same",
    "train.iterations": "train longer or shorter",
    "train.log_every": "logging",
    "train.checkpoint_every": "checkpointing",
    "train.keep_checkpoints": "checkpointing",
    "train.sample_every": "monitoring",
    "train.micro_batch": "the same gradient in other memory",
    "train.tf32": "speed",
    "train.channels_last": "speed",
    "train.compile": "speed",
    "train.checkpoint_activations": "memory",
    "run.device": "another machine",
    "run.threads": "another machine",
    "eval.*": "evaluation and EMA reporting do not change training",
}


def _resumable(key: str) -> bool:
    return key in RESUMABLE_CHANGES or f"{key.split('.')[0]}.*" in RESUMABLE_CHANGES


def _differences(new: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """Fields whose value differs; a field the saved recipe predates is compared with its default."""
    defaults = default_config(new).to_dict()
    out = []
    for section, body in new.items():
        stored = saved.get(section, {})
        for key, value in body.items():
            if stored.get(key, defaults[section][key]) != value:
                out.append(f"{section}.{key}")
    return out


def default_config(table: dict[str, Any]) -> Config:
    """The default config with the kinds that ``table`` (a config's ``to_dict()``) chooses."""
    kinds = {
        name: cls(kind=table[name]["kind"])
        for name, cls in SECTIONS.items()
        if kinds_of(cls) is not None and name in table
    }
    return Config(**kinds)


def upgrade_saved(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config.json of an older version in today's layout: the flow map's options,
    once a section ``[flowmap]`` of their own, are fields of ``[student]``."""
    saved = dict(saved)
    flowmap = saved.pop("flowmap", None)
    if isinstance(flowmap, dict) and isinstance(saved.get("student"), dict):
        if saved["student"].get("kind") == "flowmap":
            saved["student"] = {**saved["student"], **flowmap}
    return saved


def write_run_config(cfg: Config, run_dir: Path) -> None:
    """The resolved recipe beside the run: config.json and config.toml."""
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    atomic_write_text(run_dir / "config.toml", to_toml(cfg))


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / cfg.run.name


def check_writable_dir(path: Path, what: str = "the output") -> None:
    """A file can be written in folder ``path`` (or in the folder that will hold it, when it
    does not exist yet): tried for real with a temporary file, so nothing is left behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; choose a folder")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create {what} {path}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserError(
            f"cannot write {what} in {probe} ({reason}); choose another place"
        ) from None


def check_writable_file(path: Path, what: str = "the output") -> None:
    """``path`` can be (over)written: not a folder, and its folder is writable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    check_writable_dir(path.parent, what)


def _read_saved(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}); the run cannot resume") from None
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        raise UserError(f"{path} is damaged (not a table of sections); the run cannot resume")
    return upgrade_saved(saved)


def prepare_run(
    recipe: str | Path, overrides: list[str], out: str | Path | None, resume: bool
) -> tuple[Config, Path]:
    """Validate the recipe and decide the run directory, refusing to clobber a run.

    Writes nothing: the caller takes the run's lock before the first write.
    """
    cfg = load_config(recipe, overrides)
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file; give a folder for the run")
    saved = run_dir / "config.json"
    if resume:
        if not saved.is_file() or latest_checkpoint(run_dir) is None:
            raise UserError(
                f"nothing to resume in {run_dir}: no saved run there; drop --resume "
                "or point --out at the run directory"
            )
        stored = _read_saved(saved)
        changed = [k for k in _differences(cfg.to_dict(), stored) if not _resumable(k)]
        if changed:
            raise UserError(
                f"the recipe differs from the saved run in {', '.join(changed)}; resume with the "
                f"recipe the run was started with (see {saved}; fields a resumed run may change "
                "are listed in docs/recipes.md)"
            )
        from_dict(stored, source=str(saved))  # the saved config must still be valid
    elif latest_checkpoint(run_dir) is not None:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or --out "
            "to start a new one"
        )
    for name, path in (
        ("eval.fid_ref", cfg.eval.fid_ref),
        ("eval.fid_detector", cfg.eval.fid_detector),
    ):
        if cfg.eval.fid_every and not Path(path).is_file():
            raise UserError(f"'{name}' = {path!r} is not a file; FID during training needs it")
    check_writable_dir(run_dir, "the run directory")
    return cfg, run_dir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory, held by this process until ``release``.

    The lock is the file ``.lock`` in the run directory, created atomically with the holder's
    PID, host and start time. A lock left by a process that no longer exists on this host is
    stale and is taken over; a live holder makes ``acquire`` a ``UserError`` naming it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> RunLock:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        for _ in range(2):
            try:
                self._create(json.dumps(record))
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    raise UserError(
                        f"{self.path.parent} is in use by process {holder['pid']} on "
                        f"{holder['host']} (since {holder['since']}); wait for it to finish or "
                        "use another --out"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            self.held = True
            return self
        raise UserError(f"cannot take the lock {self.path}; remove it if no run uses the folder")

    def _create(self, text: str) -> None:
        """Create the lock file with its content in one step (``FileExistsError`` if taken).

        The record is written to a private file first and hard-linked to ``.lock``, so no other
        process ever reads a lock that exists but is still empty (and would take it as stale).
        """
        # not '.tmp': the lock holder's clean-up of killed writes (``remove_stale_temps``) must
        # never delete the claim of a process that is taking the lock at that moment
        fd, tmp = tempfile.mkstemp(prefix=".lock.", suffix=".claim", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.link(tmp, self.path)
        finally:
            os.unlink(tmp)

    def _holder(self) -> dict[str, Any] | None:
        """The live holder of the lock, or None when the lock is stale (or unreadable)."""
        try:
            holder = json.loads(self.path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if host != socket.gethostname():
            return {"pid": pid, "host": host, "since": holder.get("since", "?")}
        return holder if _alive(pid) else None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
