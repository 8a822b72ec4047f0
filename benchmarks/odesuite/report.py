"""report.md of the odesuite from its results: the suite, the final table (tol met or not), the ablation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.odesuite.settings import VARIANTS
from benchmarks.odesuite.systems import SUITE

SECTIONS = [
    "Summary",
    "Machine and command",
    "The suite",
    "Final table",
    "Ablation",
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
        rows = final["rows"]
        met = [r for r in rows if r["met"]]
        one = [r for r in met if r["evaluations"] == 1]
        out.append(
            f"- distill(system, tol={final['tol']:g}, max_seconds={final['budget']:g}, "
            f"clock='process'), one thread: tol met on {len(met)} of {len(rows)} runs, "
            f"{len(one)} with one evaluation; norm-relative error on {final['test_n']} fresh "
            "held-out states: "
            + ", ".join(f"{r['system']} {r['error']:.2g} ({r['evaluations']} ev.)" for r in rows)
            + "."
        )
        ratio = [r["error"] / r["val_error"] for r in rows if r["val_error"] > 0]
        if ratio:
            out.append(
                f"- Fresh-state error over the returned validation.error: {min(ratio):.2f} to "
                f"{max(ratio):.2f} (target: within 1.5x)."
            )
        big = [r for r in rows if "error_big" in r]
        if big:
            ratio = [r["error_big"] / r["val_error"] for r in big if r["val_error"] > 0]
            n = final.get("big_n", "?")
            out.append(
                f"- On {n} fresh states (seed {final.get('big_seed', '?')}): met (error <= tol) on "
                f"{sum(r['error_big'] <= final['tol'] for r in big)} of {len(big)}; over the "
                f"returned validation.error: {min(ratio):.2f} to {max(ratio):.2f}."
            )
            spread = [
                (r["system"], lo / r["error_big"], hi / r["error_big"])
                for r in big
                if r.get("big_chunk_means")
                for lo, hi in [r["big_chunk_means"]]
            ]
            if spread:
                wide = max(spread, key=lambda x: x[2] / x[1])
                out.append(
                    f"- What {final['test_n']} states can read: the means of disjoint sets of "
                    f"{final['test_n']} among the {n} lie within {min(x[1] for x in spread):.2f}"
                    f" to {max(x[2] for x in spread):.2f} of the {n}-state mean (widest: "
                    f"{wide[0]}, {wide[1]:.2f} to {wide[2]:.2f})."
                )
    ab = results.get("ablation")
    if ab:
        geo = {v: _geo([r["error"] for r in rows]) for v, rows in _ablation_rows(ab).items()}
        best = min(geo, key=geo.get)
        out.append(
            f"- Ablation at {ab['budget']:g} CPU-s: geometric-mean norm-relative error "
            + ", ".join(f"{v} {g:.3g}" for v, g in geo.items())
            + f" (lowest: {best})."
        )
    return out or ["- (no part has run)"]


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
        f"distill(system, tol={final['tol']:g}, max_seconds={final['budget']:g}, "
        f"clock='process', student='{final.get('student', 'pid')}') with every other argument "
        "at its default: the student fits the trajectories of 4096 initial states solved "
        "once by the reference solver (`solved=4096`, the solve inside the budget), no "
        "residual (`residual_fraction=0`). ('auto': one step first, a flow map of 4 jumps "
        "where one step misses tol in half the budget; its steps and CPU seconds are then the "
        "flow map's). "
        f"error = norm-relative error mean|x − x*| / mean|x*| at t_end on {final['test_n']} "
        "fresh held-out states against scipy (DOP853, 1e-10); median and p95 of the per-sample "
        "|x − x*| / mean|x*|; val = the returned student.validation['error'] on its own "
        "held-out states (val n of them: 500, more where the validation grew its set because "
        "the mean was unsure); met = validation error <= tol; error (big) and p99 (big) on "
        f"{final.get('big_n', 0)} further fresh states (seed {final.get('big_seed', '-')}), "
        "which a heavy tail needs. Secondary: ratio = the mean per-sample relative error over "
        "Euler(N−1)'s (PID's figure).",
        "",
        "| system | seed | evaluations | steps | train CPU s | wall s | **error** | median | "
        "p95 | val | val n | met | error (big) | p99 (big) | ratio to Euler(N−1) | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in final["rows"]:
        lines.append(
            f"| {r['system']} | {r['seed']} | {r['evaluations']} | {r['steps']} | "
            f"{_g(r['train_cpu_s'])} | {_g(r['wall_s'])} | **{_g(r['error'])}** | "
            f"{_g(r['median'])} | {_g(r['p95'])} | {_g(r['val_error'])} | "
            f"{r.get('val_n') or '-'} | {'yes' if r['met'] else 'no'} | "
            f"{_g(r.get('error_big'))} | {_g(r.get('p99_big'))} | {_g(r['ratio'])} | {_load(r)} |"
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
        "1.5x, so smaller differences are noise). Entries are norm-relative errors on the "
        "fresh held-out states ('*': tol met).",
        "",
        "| variant | " + " | ".join(systems) + " | geo-mean | worst | steps (mean) |",
        "|---|" + "---|" * (len(systems) + 3),
    ]
    for v, vr in rows.items():
        by = {r["system"]: r for r in vr}
        cells = [
            "-"
            if n not in by
            else f"{'=' if by[n]['variant'] != v else ''}{by[n]['error']:.2g}"
            + ("*" if by[n]["met"] else "")
            for n in systems
        ]
        ratios = [r["error"] for r in vr]
        steps = sum(r["steps"] for r in vr) / max(len(vr), 1)
        lines.append(
            f"| {v} | " + " | ".join(cells) + f" | {_geo(ratios):.3g} | {max(ratios):.3g} | "
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


def write_report(results: dict[str, Any], out: Path) -> Path:
    body = {
        "Summary": summary(results),
        "Machine and command": machine_section(results),
        "The suite": suite_section(results),
        "Final table": final_section(results.get("final")),
        "Ablation": ablation_section(results.get("ablation")),
    }
    text = ["# odesuite: distill(system, tol) on ten ODEs", ""]
    for name in SECTIONS:
        text += [f"## {name}", "", *body[name], ""]
    path = Path(out) / "report.md"
    path.write_text("\n".join(text))
    return path
