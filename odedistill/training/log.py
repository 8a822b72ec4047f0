"""metrics.jsonl: one JSON line per logged step, appended by rank 0, trimmed back on resume; run_info.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from odedistill._io import atomic_write_json, atomic_write_text
from odedistill.infra.machine import machine_info

if TYPE_CHECKING:
    from odedistill.training.trainer import Trainer


class MetricsLog:
    """Append records to ``run_dir/metrics.jsonl`` (a no-op on other ranks than 0)."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._file: IO[str] | None = None

    def __enter__(self) -> MetricsLog:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def trim(self, last_step: int) -> None:
        """Keep only whole lines of steps up to ``last_step``: lines written after the
        checkpoint a run continues from, and a line cut off by a killed process, are dropped."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(step, int) and step <= last_step:
                keep.append(line)
        atomic_write_text(self.path, "".join(ln + "\n" for ln in keep))


def write_run_info(trainer: Trainer) -> Path:
    """run_info.json: the machine, the precision and the batch layout of a trainer's run."""
    tc, s = trainer.cfg.train, trainer.session
    info = machine_info(
        s.device,
        world_size=trainer.dist.world_size,
        precision=tc.precision,
        autocast_dtype=None if trainer.precision.dtype is None else str(trainer.precision.dtype),
        grad_scaler=trainer.scaler is not None,
        tf32=bool(tc.tf32 and s.device.type == "cuda"),
        channels_last=tc.channels_last,
        compile=tc.compile,
        checkpoint_activations=tc.checkpoint_activations,
        batch=tc.batch,
        batch_per_process=trainer.share,
        micro_batch=trainer.micro,
        accumulation_steps=-(-trainer.share // trainer.micro),
        start_step=trainer.step,
        parameters=sum(p.numel() for p in s.model.parameters()),
    )
    return atomic_write_json(trainer.run_dir / "run_info.json", info)
