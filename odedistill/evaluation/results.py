"""A run's FID results: fid.json (every result) and fid.csv (the same as a table), merged and written atomically."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from odedistill._io import atomic_write_json, atomic_write_text
from odedistill.errors import UserError

FID_JSON = "fid.json"
FID_CSV = "fid.csv"
FORMAT = "odedistill-fid-1"
CSV_COLUMNS = (
    "step",
    "weights",
    "fid",
    "num_images",
    "seeds",
    "ref",
    "detector",
    "checkpoint",
    "time",
)


def make_records(
    fids: dict[str, float], settings: dict[str, Any], step: int, checkpoint: Path
) -> list[dict[str, Any]]:
    """One record per weights: step, weights, fid, the scorer's settings, checkpoint, time."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return [
        {
            "step": step,
            "weights": name,
            "fid": fid,
            **settings,
            "checkpoint": checkpoint.name,
            "time": now,
        }
        for name, fid in fids.items()
    ]


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """The results in a run's fid.json (none if it has none)."""
    path = Path(run_dir) / FID_JSON
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        results = data["results"]
        if not isinstance(results, list):
            raise TypeError
        return results
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a readable {FID_JSON}; move it away and rerun") from e


def _key(r: dict[str, Any]) -> tuple:
    return (r["step"], r["weights"], r["seeds"], r["ref"], r["detector"])


def record_results(run_dir: str | Path, records: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Merge ``records`` into the run's fid.json and fid.csv (a newer result replaces an older
    one of the same step, weights, seeds, reference and detector); both written atomically."""
    run_dir = Path(run_dir)
    merged = {_key(r): r for r in read_results(run_dir)}
    merged.update({_key(r): r for r in records})
    results = sorted(merged.values(), key=lambda r: (r["step"], r["weights"], r["seeds"]))
    json_path = atomic_write_json(run_dir / FID_JSON, {"format": FORMAT, "results": results})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({**r, "fid": repr(float(r["fid"]))})
    csv_path = atomic_write_text(run_dir / FID_CSV, buf.getvalue())
    return json_path, csv_path


def best(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record with the lowest finite FID."""
    finite = [r for r in records if np.isfinite(r["fid"])]
    return min(finite, key=lambda r: r["fid"]) if finite else None
