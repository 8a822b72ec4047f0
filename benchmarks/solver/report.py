"""report.md of the solver benchmark: speed at equal error, break-even, the a-posteriori check, the targets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SECTIONS = [
    "Speed at equal error",
    "Break-even: states at which distillation pays off",
    "The a-posteriori check",
    "Targets",
    "Where distillation does not pay off",
]
SOLVERS = {
    "rk4": "torch RK4",
    "dop853_batch": "DOP853, batch",
    "dop853_each": "DOP853, each",
    "lsoda_batch": "LSODA, batch",
    "lsoda_each": "LSODA, each",
}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1000 * v:.3g}"


def _x(entry: dict[str, Any]) -> str:
    return f"{entry['speedup']:.3g}x" if "speedup" in entry else "not reached"


def _rtol(v: float | None) -> str:
    return "none reached" if v is None else f"{v:.0e}"


def _ratio(a: float, b: float | None) -> str:
    return "-" if b is None else f"{a / b:.2g}x"


def _states(v: float | None) -> str:
    if v is None:
        return "-"
    return "never" if math.isinf(v) else f"{v:,.0f}"


def speed_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| system | student error (tol met) | evaluations | student ms | RK4 steps | RK4 ms | vs RK4 | DOP853 batch ms "
        "(rtol) | vs DOP853 batch | vs DOP853 each | vs LSODA batch | vs LSODA each |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["dop853_batch"]
        v = r["training"].get("validation") or {}
        met = {True: "yes", False: "no"}.get(v.get("met"), "-")
        out.append(
            f"| {r['system']} | {r['student']['error']:.3g} ({met}) | "
            f"{r['student']['evaluations']} | {_ms(r['student']['cpu_s'])} | "
            f"{r['rk4'].get('steps') or '-'} | {_ms(r['rk4'].get('cpu_s'))} | {_x(r['rk4'])} | "
            f"{_ms(d.get('cpu_s'))} ({_rtol(d['rtol'])}) | "
            f"{_x(d)} | {_x(r['dop853_each'])} | {_x(r['lsoda_batch'])} | {_x(r['lsoda_each'])} |"
        )
    return out


def break_even_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| system | training CPU-s | " + " | ".join(SOLVERS.values()) + " |",
        "|---|---|" + "---|" * len(SOLVERS),
    ]
    for r in rows:
        cells = [_states(r[k].get("break_even_states")) for k in SOLVERS]
        out.append(
            f"| {r['system']} | {r['training']['train_cpu_s']:.0f} | " + " | ".join(cells) + " |"
        )
    return out


def check_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| system | Spearman (defect) | recall worst 5 % (defect) | Spearman (linear) | "
        "recall worst 5 % (linear) | Spearman (integral) | recall worst 5 % (integral) | "
        "indicator / error, median | check ms | check / student | check / RK4 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["check"]
        rk = r["rk4"].get("cpu_s")
        out.append(
            f"| {r['system']} | {c['spearman']:.2f} | {c['recall_worst_5pct']:.2f} | "
            f"{c['spearman_linear']:.2f} | {c['recall_worst_5pct_linear']:.2f} | "
            f"{c['spearman_integral']:.2f} | {c['recall_worst_5pct_integral']:.2f} | "
            f"{c['indicator_over_error_median']:.2f} | {_ms(c['cpu_s'])} | "
            f"{c['cpu_s'] / r['student']['cpu_s']:.0f}x | "
            f"{_ratio(c['cpu_s'], rk)} |"
        )
    return out


def _nodes(points: int | None) -> str:
    return "adaptive nodes" if points is None else f"{points} nodes"


def _node_use(check: dict[str, Any]) -> str:
    """'mean 41; 32: 88 %, 64: 10 %, ...' for an adaptive check, '' for a fixed one."""
    nodes = check.get("nodes")
    if not nodes:
        return ""
    shares = sorted(nodes["share"].items(), key=lambda kv: int(kv[0]))
    return f"{nodes['mean']:.0f} (" + ", ".join(f"{m}: {100 * v:.0f} %" for m, v in shares) + ")"


def points_table(rows: list[dict[str, Any]], points: int | None) -> list[str]:
    sweep = sorted({int(p) for r in rows for p in r["check"]["by_points"]})
    head = " | ".join(f"{p} nodes" for p in sweep) + f" | {_nodes(points)}"
    adaptive = points is None
    if adaptive:
        head += " | nodes per sample: mean (share at each)"
    out = [f"| system | {head} |", "|---|" + "---|" * (len(sweep) + 1 + adaptive)]
    for r in rows:
        c, by = r["check"], {int(p): v for p, v in r["check"]["by_points"].items()}
        cells = [
            f"{by[p]['spearman']:.2f} / {by[p]['recall_worst_5pct']:.2f} / {_ms(by[p]['cpu_s'])} ms"
            for p in sweep
        ]
        cells.append(f"{c['spearman']:.2f} / {c['recall_worst_5pct']:.2f} / {_ms(c['cpu_s'])} ms")
        if adaptive:
            cells.append(_node_use(c))
        out.append(f"| {r['system']} | " + " | ".join(cells) + " |")
    return out


def targets(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| system | >= 50x every scipy | >= 5x torch RK4 | Spearman >= 0.7 |",
        "|---|---|---|---|",
    ]
    for r in rows:
        scipy = [r[k].get("speedup", 0.0) for k in SOLVERS if k != "rk4"]
        out.append(
            f"| {r['system']} | {'met' if min(scipy) >= 50 else 'not met'} (least "
            f"{min(scipy):.3g}x) | {'met' if r['rk4'].get('speedup', 0) >= 5 else 'not met'} | "
            f"{'met' if r['check']['spearman'] >= 0.7 else 'not met'} |"
        )
    return out


def does_not_pay(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        rk = r["rk4"]
        if rk.get("speedup", 0) < 1:
            out.append(
                f"- **{r['system']}**: torch RK4 reaches the student's error "
                f"({r['student']['error']:.3g}) in {rk.get('steps')} steps and is "
                + (f"{1 / rk['speedup']:.2g}x faster than the student" if "speedup" in rk else "-")
                + ": distilling never pays against a batched fixed-step solver here."
            )
        elif math.isinf(rk.get("break_even_states", math.inf)) or rk["break_even_states"] > 1e7:
            out.append(
                f"- **{r['system']}**: against torch RK4 the training pays off only after "
                f"{_states(rk.get('break_even_states'))} states."
            )
    if not out:
        out.append("- Every system's student is faster than every solver at its error.")
    out += [
        "",
        "Why: one evaluation of the default student (an MLP of width 128 and depth 3 with its "
        "input features, 76,000 weights) costs about 1.5 x 10^5 floating-point operations per state, whatever the "
        "ODE; a fixed-step solver costs 4 x steps evaluations of f, and the f of a small ODE is "
        "a few dozen operations. A one-evaluation student therefore beats a *batched* solver "
        "only where f is itself expensive (a network teacher, as for the diffusion ODEs, or a "
        "large system) or needs thousands of steps (stiff, long or sharp dynamics). Against one "
        "scipy solve per state (Python overhead per step) it wins by orders of magnitude, and "
        "the break-even counts above say after how many states its training is repaid.",
    ]
    return out


def write_report(results: dict[str, Any], out: Path) -> None:
    meta, rows = results["meta"], results["rows"]
    m = meta["machine"]
    s = meta["settings"]
    earlier = sorted(
        {r["command"] for r in rows if r.get("command", meta["command"]) != meta["command"]}
    )
    lines = [
        "# Solver benchmark: a distilled student against the solvers it replaces",
        "",
        f"Command: `{meta['command']}` (preset {meta['preset']}), commit {meta['commit']}, "
        f"{meta['started']} to {meta['finished']}."
        + (f" Rows from earlier runs: {', '.join(f'`{c}`' for c in earlier)}." if earlier else ""),
        f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores, torch {m.get('torch')}, "
        f"{meta['threads']} thread; load average {meta['load_average_before']} before, "
        f"{meta['load_average_after']} after (a shared machine: times are process CPU seconds, "
        "the least of the repeats, so other jobs change them little).",
        "",
        f"Each system: `distill(student={s.get('student', 'pid')!r})` for "
        f"{s['train_seconds']:g} CPU-s"
        + (
            f" with tol = {s['tol']:g}"
            if meta["distill_has_tol"]
            else " (this distill() has no `tol`: the budget alone decides, on the suite's grid)"
        )
        + f"; {s['n']:,} held-out states; error = norm-relative at t_end, mean |x − x*| / mean "
        "|x*|, against scipy DOP853 at rtol = atol = 1e-10. Every solver is run at the loosest "
        "setting that reaches the student's own error: RK4 (torch, float32, the whole batch at "
        "once) at its fewest steps, scipy at the loosest rtol of 1e-1, 10^-1.5, ... (atol = rtol "
        "x mean |z|), 'batch' solving all states as one system (LSODA told the Jacobian is "
        f"block-diagonal), 'each' one state at a time ({s['n_per_sample']} states, time scaled "
        f"to {s['n']:,}). 'vs X' = X's CPU time / the student's (one evaluation of all states).",
        "",
        f"## {SECTIONS[0]}",
        "",
        *speed_table(rows),
        "",
        f"## {SECTIONS[1]}",
        "",
        "Training CPU-s / (solver's − student's CPU-s per state); 'never' where the solver is "
        "cheaper per state than the student.",
        "",
        *break_even_table(rows),
        "",
        f"## {SECTIONS[2]}",
        "",
        f"`student.sample(z, check=True)` on {_nodes(s['points'])}: 'defect' (its default for "
        "states of up to 32 numbers) integrates the error equation e' = ∂_t x − f(x − e, t) along "
        "the student's path by the implicit trapezoid rule with Newton steps, on the nodes and on "
        "every other node, and extrapolates (Richardson)"
        + (
            "; adaptive: 32 nodes per jump first, doubled for each sample (up to 512) until its "
            "extrapolations R(M/2, M) and R(M/4, M/2) agree to 10 % and their gap shrank at least "
            "8x from the level before"
            if s["points"] is None
            else ""
        )
        + "; 'linear' is one trapezoid pass of its linearisation e' = J e + r and 'integral' "
        f"∫|r| dt, both on {s['points'] or 64} nodes. Spearman's rank correlation with the "
        "true per-sample error |x − x*|, and the share of the truly worst 5 % among the 5 % it "
        "flags.",
        "",
        *check_table(rows),
        "",
        "Fixed nodes per jump ('defect') beside the check above: Spearman / recall of the worst "
        "5 % / CPU ms.",
        "",
        *points_table(rows, s["points"]),
        "",
        f"## {SECTIONS[3]}",
        "",
        *targets(rows),
        "",
        f"## {SECTIONS[4]}",
        "",
        *does_not_pay(rows),
        "",
    ]
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(out / "report.md")
