"""metrics.jsonl: one JSON line per logged step, appended by rank 0, trimmed back on resume; run_info.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import torch

from odedistill._io import atomic_write_json, atomic_write_text
from odedistill.infra.machine import machine_info


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


def write_run_info(
    run_dir: Path, device: torch.device, info: dict[str, Any], start_step: int
) -> Path:
    """run_info.json: the machine, and ``info`` (the precision and batch layout of the run,
    from ``training.assemble.run_info``), from step ``start_step`` on."""
    fields = machine_info(device, **info, start_step=start_step)
    return atomic_write_json(Path(run_dir) / "run_info.json", fields)
