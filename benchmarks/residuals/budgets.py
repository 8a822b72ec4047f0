"""The report's "Other budgets" section: runs of this benchmark at another ``--budget``, kept as
``budgets/*.json`` beside the main results (each a results.json, often of one problem), with
every seed's error curve and whether it decreases from 1 to 8 evaluations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.residuals.settings import ERR, NFES

FOLDER = "budgets"


def decreasing(values: list[float]) -> bool:
    """Whether the values decrease strictly, one to the next."""
    return all(b < a for a, b in zip(values, values[1:], strict=False))


def kept(out: Path) -> list[dict[str, Any]]:
    """The results.json files kept in ``out/budgets``, by budget."""
    runs = [json.loads(f.read_text()) for f in sorted((out / FOLDER).glob("*.json"))]
    return sorted(runs, key=lambda r: r["meta"]["budget_cpu_seconds"])


def curves(results: dict[str, Any]) -> dict[tuple[str, str], dict[int, list[float]]]:
    """Per (problem, family), per seed: the relative error at 1, 2, 4, 8 evaluations."""
    out: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in results["runs"]:
        if r.get("by_nfe"):
            out.setdefault((r["problem"], r["family"]), {})[r["seed"]] = [
                r["by_nfe"][str(K)][ERR] for K in NFES
            ]
    return out


def budget_lines(out: Path) -> list[str]:
    """The section's lines: per kept budget its command, machine and load, then per problem and
    family the mean curve, whether it decreases, and each seed's curve."""
    files = kept(out)
    if not files:
        return [f"(none here: copy a results.json of another --budget to {FOLDER}/)", ""]
    lines = [
        f"The benchmark at other CPU budgets per run, kept in `{FOLDER}/` (each family at the "
        "same budget as the others in its file). Relative error at 1, 2, 4 and 8 evaluations: "
        "the mean over the seeds, whether it decreases strictly, and every seed's curve.",
        "",
    ]
    for res in files:
        m = res["meta"]
        iters: dict[tuple[str, str], list[int]] = {}
        for r in res["runs"]:
            iters.setdefault((r["problem"], r["family"]), []).append(r["iterations"])
        lines += [
            f"**{m['budget_cpu_seconds']:g} CPU-s per run**: `{m['command']}`; "
            f"{m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} cores, one thread, "
            f"{m['jobs']} run(s) at once; load average {_load(m.get('loadavg_start'))} at the "
            f"start, {_load(m.get('loadavg_end'))} at the end; wall time "
            f"{m.get('wall_seconds', 0) / 60:.1f} min."
            + (f" {m['note']}" if m.get("note") else ""),
            "",
            "| problem | family | iterations | mean: 1 · 2 · 4 · 8 eval. | decreasing | "
            "seeds decreasing | per seed |",
            "|---|---|---:|---|---|---:|---|",
        ]
        for (problem, family), by_seed in curves(res).items():
            mean = [sum(c[j] for c in by_seed.values()) / len(by_seed) for j in range(len(NFES))]
            per_seed = "; ".join(
                f"{seed}: " + " · ".join(f"{e:.4g}" for e in c) for seed, c in by_seed.items()
            )
            n_it = iters[(problem, family)]
            lines.append(
                f"| {problem} | {family} | {sum(n_it) / len(n_it):.0f} | "
                + " · ".join(f"{e:.4g}" for e in mean)
                + f" | {'yes' if decreasing(mean) else 'no'} | "
                + f"{sum(decreasing(c) for c in by_seed.values())}/{len(by_seed)} | {per_seed} |"
            )
        lines.append("")
    return lines


def _load(values: list[float] | None) -> str:
    return " / ".join(f"{v:.1f}" for v in values) if values else "?"
