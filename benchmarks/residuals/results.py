"""Results files of the residual-family benchmark: finished runs kept, parts merged into one report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.residuals.report import write_report
from benchmarks.residuals.settings import ResidualBenchSettings, log_default
from odedistill import UserError


def reusable(path: str | Path | None, st: ResidualBenchSettings) -> dict[tuple[str, str, int], Any]:
    """Finished runs of an earlier results.json with the same preset and budget, by
    (problem, family, seed): a benchmark stopped or extended is not run twice."""
    if path is None or not Path(path).is_file():
        return {}
    old = json.loads(Path(path).read_text())
    meta = old.get("meta", {})
    if meta.get("preset") != st.preset or meta.get("budget_cpu_seconds") != st.budget:
        return {}
    return {(r["problem"], r["family"], r["seed"]): r for r in old.get("runs", [])}


def merge(paths: list[str], out: str | Path, log: Callable[[str], None] = log_default) -> None:
    """One report from several results.json of the same preset and budget (parts run
    separately, e.g. by --problems, --families or --seeds): the runs and costs of all, the
    first file's machine, each file's command."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]["meta"]
    for p, part in zip(paths, parts, strict=True):
        m = part["meta"]
        if (m["preset"], m["budget_cpu_seconds"]) != (first["preset"], first["budget_cpu_seconds"]):
            raise UserError(
                f"{p}: preset or budget differs from {paths[0]}'s; merge like with like"
            )
    meta = {**first, "command": "; ".join(dict.fromkeys(p["meta"]["command"] for p in parts))}
    for key in ("problems", "families"):
        meta[key] = {k: v for p in parts for k, v in p["meta"][key].items()}
    meta["seeds"] = sorted({r["seed"] for p in parts for r in p["runs"]})
    meta["unavailable"] = {k: v for p in parts for k, v in p["meta"]["unavailable"].items()}
    meta["wall_seconds"] = max(p["meta"].get("wall_seconds", 0) for p in parts)
    meta["loadavg_end"] = parts[-1]["meta"].get("loadavg_end")
    costs: dict[str, Any] = {}  # one process per problem: the first file's timing of it
    for part in parts:
        for c in part["cost"]:
            costs.setdefault(c["problem"], c)
    results = {
        "meta": meta,
        "runs": [r for p in parts for r in p["runs"]],
        "cost": list(costs.values()),
    }
    reading = next((p["reading"] for p in parts if p.get("reading")), None)
    if reading:
        results["reading"] = reading
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    log(f"wrote {out / 'report.md'} from {len(paths)} result files")
