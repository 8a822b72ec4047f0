"""report.md of the odesuite from its results: the suite, the final table, early stopping, the ablation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.odesuite.settings import VARIANTS
from benchmarks.odesuite.systems import SUITE
from benchmarks.odesuite.training import early_stop

SECTIONS = [
    "Summary",
    "Machine and command",
    "The suite",
    "Final table",
    "Early stopping",
    "Ablation",
    "Earlier final table",
]


def _g(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def _load(row: dict[str, Any]) -> str:
    a, b = row.get("loadavg_start") or [None], row.get("loadavg_end") or [None]
    return f"{_g(a[0], 2)} → {_g(b[0], 2)}"


def _geo(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summary(results: dict[str, Any]) -> list[str]:
    out = []
    final = results.get("final")
    if final:
        target = final["target"]
        by = _mean_by_system(final["rows"])
        met = [n for n, r in by.items() if r <= target]
        missed = [f"{n} ({r:.2f})" for n, r in by.items() if r > target]
        out.append(
            f"- distill()'s defaults, {final['budget']:g} CPU-s of training per system "
            f"(seeds {final['seeds']}): ratio to Euler(N - 1) "
            f"{', '.join(f'{n} {r:.2f}' for n, r in by.items())}."
        )
        out.append(
            f"- Target ≤ {target:g} met on {len(met)} of {len(by)}"
            + (f": {', '.join(met)}" if met else "")
            + (f"; missed: {', '.join(missed)}." if missed else ".")
        )
    ab = results.get("ablation")
    if ab:
        geo = {v: _geo([r["ratio"] for r in rows]) for v, rows in _ablation_rows(ab).items()}
        best = min(geo, key=geo.get)
        out.append(
            f"- Ablation at {ab['budget']:g} CPU-s: geometric-mean ratio "
            + ", ".join(f"{v} {g:.2f}" for v, g in geo.items())
            + f" (lowest: {best})."
        )
    return out or ["- (no part has run)"]


def _mean_by_system(rows: list[dict[str, Any]]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["system"], []).append(r["ratio"])
    return {n: sum(v) / len(v) for n, v in by.items()}


def _ablation_rows(ab: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows per variant; a variant that cannot differ from the defaults on a system (the
    'upwind' variant where N > 32) takes the defaults' row."""
    rows: dict[str, list[dict[str, Any]]] = {}
    base = {r["system"]: r for r in ab["rows"] if r["variant"] == "defaults"}
    for v in ab["variants"]:
        own = {r["system"]: r for r in ab["rows"] if r["variant"] == v}
        rows[v] = [own.get(n) or base[n] for n in ab["systems"] if (own.get(n) or base.get(n))]
    return rows


def machine_section(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    m = meta["machine"]
    parts = [
        f"- {label}: " + "; ".join(f"`{c}`" for c in results[key]["command"].split("; "))
        for key, label in (
            ("final", "final table"),
            ("earlystop", "early stopping"),
            ("ablation", "ablation"),
            ("final_previous", "earlier final table"),
        )
        if results.get(key)
    ]
    return [
        f"- command (latest): `{meta['command']}`",
        *parts,
        f"- date: {meta['date']}, wall time {meta['wall_seconds']:.0f} s",
        f"- machine: {m.get('cpu_model')}, {m.get('cpu_count')} logical cores; torch "
        f"{m.get('torch')}, {meta['torch_threads']} thread; odedistill {m.get('odedistill')} "
        f"(commit {m.get('git_commit')})",
        f"- load average (1 min) {_g((meta.get('load_average_before') or [None])[0], 2)} before, "
        f"{_g((meta.get('load_average_after') or [None])[0], 2)} after; per run in the tables. "
        "The machine is shared: budgets are process CPU seconds of training steps "
        "(time.process_time, one torch thread), which stand for seconds on an idle machine; "
        "contention still makes each step a little slower.",
    ]


def suite_section(results: dict[str, Any]) -> list[str]:
    euler = results.get("euler_errors", {})
    lines = [
        "| system | equations | interval | initial states | condition | N | grid | Euler(N−1) error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in results["meta"]["settings"]["systems"]:
        s = SUITE[name]
        lines.append(
            f"| {name} | {s.equations} | {s.interval} | {s.initial} | {s.condition} | {s.N} | "
            f"{s.grid} | {_g(euler.get(name), 3)} |"
        )
    return lines


def final_section(final: dict[str, Any] | None) -> list[str]:
    if not final:
        return ["Not run."]
    lines = [
        f"distill(system, N=N, grid=grid, max_seconds={final['budget']:g}, clock='process') with "
        "every other argument at its default (causal_eps = "
        f"{_g((final.get('distill_defaults') or {}).get('causal_eps'))}); error = mean relative error of the one-step "
        f"student (EMA) at t_end on {final['test_n']} held-out states against scipy; ratio = "
        "error / Euler(N−1)'s on the same states.",
        "",
        "| system | seed | N | scheme | steps | train CPU s | wall s | ms/step | student error | "
        "Euler(N−1) | **ratio** | ≤ target | last val_ratio | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in final["rows"]:
        last = r["val_curve"][-1]["val_ratio"] if r["val_curve"] else None
        lines.append(
            f"| {r['system']} | {r['seed']} | {r['N']} | {r['scheme']} | {r['steps']} | "
            f"{_g(r['train_cpu_s'])} | {_g(r['wall_s'])} | {_g(r['ms_per_step_cpu'])} | "
            f"{_g(r['error'])} | {_g(r['euler_error'])} | **{r['ratio']:.2f}** | "
            f"{'yes' if r['meets_target'] else 'no'} | {_g(last)} | {_load(r)} |"
        )
    return lines


def early_stop_section(final: dict[str, Any] | None) -> list[str]:
    if not final:
        return ["Not run."]
    t = final["target"]
    lines = [
        f"Where `stop_at_ratio={t:g}` (two consecutive validation checks at or below it, every "
        f"{final['validate_every']} steps on 256 held-out states) would have stopped the runs "
        "of the final table; the checks do not change training, so the curves show it.",
        "",
        "| system | seed | stop step | train CPU s at stop | saved | val_ratio at stop | "
        "test ratio at the end |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in final["rows"]:
        hit = early_stop(r["val_curve"], t)
        if hit is None:
            lines.append(f"| {r['system']} | {r['seed']} | never | - | - | - | {r['ratio']:.2f} |")
            continue
        sec = hit.get("train_seconds")
        saved = 1 - sec / r["budget_cpu_s"] if sec is not None else None
        lines.append(
            f"| {r['system']} | {r['seed']} | {hit['step']} | {_g(sec)} | "
            f"{'-' if saved is None else f'{100 * saved:.0f} %'} | {hit['val_ratio']:.2f} | "
            f"{r['ratio']:.2f} |"
        )
    return lines


def stopped_runs(stops: dict[str, Any] | None) -> list[str]:
    """The runs of the 'earlystop' part: distill(stop_at_ratio=target) for real."""
    if not stops:
        return []
    lines = [
        "",
        f"Runs with `distill(..., stop_at_ratio={stops['target']:g})` for real (budget "
        f"{stops['budget']:g} CPU-s; `{stops['command']}`). The learning-rate schedule follows "
        "the CPU clock, so these runs do not repeat the final table's step for step:",
        "",
        "| system | seed | stopped at step | train CPU s | last val_ratio | test ratio of the "
        "returned student | load 1-min |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in stops["rows"]:
        last = r["val_curve"][-1]["val_ratio"] if r["val_curve"] else None
        lines.append(
            f"| {r['system']} | {r['seed']} | {r['steps']} | {_g(r['train_cpu_s'])} | "
            f"{_g(last)} | {r['ratio']:.2f} | {_load(r)} |"
        )
    return lines


def ablation_section(ab: dict[str, Any] | None) -> list[str]:
    if not ab:
        return ["Not run."]
    systems = ab["systems"]
    rows = _ablation_rows(ab)
    eps = (ab.get("distill_defaults") or {}).get("causal_eps")
    lines = [
        f"Each variant changes distill()'s defaults of the time of the run (causal_eps = "
        f"{_g(eps)}) as described; {ab['budget']:g} CPU-s per "
        f"system, seed {ab['seed']}, one run each (between seeds a ratio varies by up to about "
        "1.5x, so smaller differences are noise). Entries are ratios to Euler(N−1).",
        "",
        "| variant | " + " | ".join(systems) + " | geo-mean | worst | steps (mean) |",
        "|---|" + "---|" * (len(systems) + 3),
    ]
    for v, vr in rows.items():
        by = {r["system"]: r for r in vr}
        cells = [
            "-" if n not in by else f"{'=' if by[n]['variant'] != v else ''}{by[n]['ratio']:.2f}"
            for n in systems
        ]
        ratios = [r["ratio"] for r in vr]
        steps = sum(r["steps"] for r in vr) / max(len(vr), 1)
        lines.append(
            f"| {v} | " + " | ".join(cells) + f" | {_geo(ratios):.2f} | {max(ratios):.2f} | "
            f"{steps:.0f} |"
        )
    lines += [
        "",
        "'=': the variant is the defaults on this system (the defaults' run is shown).",
        "",
        "Variants:",
        "",
    ]
    lines += [f"- `{v}`: {VARIANTS[v].help}" for v in ab["variants"]]
    loads = [r["loadavg_start"][0] for r in ab["rows"] if r.get("loadavg_start")]
    if loads:
        lines += [
            "",
            f"Load average (1 min) during the ablation: {min(loads):.2f} to {max(loads):.2f}.",
        ]
    return lines


def previous_section(results: dict[str, Any]) -> list[str]:
    """The final table under distill()'s earlier defaults, beside the current one."""
    old, new = results.get("final_previous"), results.get("final")
    if not old or not new:
        return ["None."]
    eps_old = (old.get("distill_defaults") or {}).get("causal_eps")
    eps_new = (new.get("distill_defaults") or {}).get("causal_eps")
    a, b = _mean_by_system(old["rows"]), _mean_by_system(new["rows"])
    lines = [
        f"The same table under the defaults before the ablation (causal_eps = {_g(eps_old)}), "
        f"`{old['command']}`, {old['date']}; ratios to Euler(N−1), seeds {old['seeds']} "
        f"against {new['seeds']}:",
        "",
        f"| system | causal_eps = {_g(eps_old)} | causal_eps = {_g(eps_new)} (current) |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {a[n]:.2f} | {b[n]:.2f} |" for n in a if n in b]
    common = [n for n in a if n in b]
    lines.append(
        f"| geo-mean | {_geo([a[n] for n in common]):.2f} | {_geo([b[n] for n in common]):.2f} |"
    )
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    body = {
        "Summary": summary(results),
        "Machine and command": machine_section(results),
        "The suite": suite_section(results),
        "Final table": final_section(results.get("final")),
        "Early stopping": early_stop_section(results.get("final"))
        + stopped_runs(results.get("earlystop")),
        "Ablation": ablation_section(results.get("ablation")),
        "Earlier final table": previous_section(results),
    }
    text = ["# odesuite: distill() on seven nonlinear ODEs", ""]
    for name in SECTIONS:
        text += [f"## {name}", "", *body[name], ""]
    path = Path(out) / "report.md"
    path.write_text("\n".join(text))
    return path
