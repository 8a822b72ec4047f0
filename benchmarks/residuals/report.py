"""report.md and the plots of the residual-family benchmark."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.residuals.budgets import budget_lines, curves, decreasing, kept  # noqa: E402
from benchmarks.residuals.settings import ERR, NFES, REFERENCE, main_family  # noqa: E402

PLOT = "error_vs_nfe.png"
SECTIONS = (
    "Setting",
    "Error against evaluations at equal CPU time",
    "Cost, gradient variance, divergences",
    "Why the multi-step error is flat",
    "Targets",
    "Other budgets",
    "Reading",
)


def summary(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (problem, family): means over the seeds that did not diverge, and the spread."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results["runs"]:
        groups.setdefault((r["problem"], r["family"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        ok = [r for r in runs if r.get("by_nfe")]
        s: dict[str, Any] = {"seeds": len(runs), "diverged": len(runs) - len(ok)}
        if ok:
            for metric in (ERR, "sliced_w1"):
                s[metric] = {
                    K: [r["by_nfe"][str(K)][metric] for r in ok if str(K) in r["by_nfe"]]
                    for K in NFES
                }
            s["iterations"] = statistics.mean(r["iterations"] for r in ok)
            s["grad_variance"] = statistics.mean(r["grad_variance"] for r in ok)
            fm = [r["flow_map"] for r in ok if r.get("flow_map")]
            for part in ("rel_error_one_step", "rel_error_to_end", "rel_error"):
                s[part] = statistics.mean(f[part] for f in fm) if fm else None
            s["floor"] = ok[0]["data_floor_sliced_w1"]
            diag = [r["error_by_start"] for r in ok if r.get("error_by_start")]
            if diag:
                s["times"] = diag[0]["times"]
                for part in ("e_from", "jump"):
                    s[part] = [
                        statistics.mean(d[part][a] for d in diag) for a in range(len(diag[0][part]))
                    ]
            s["euler"] = ok[0]["teacher_euler"]
            s["euler_grid"] = next(
                (r["teacher_euler_grid"] for r in ok if r.get("teacher_euler_grid")), None
            )
        out[key] = s
    return out


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ({min(values):.3g}–{max(values):.3g})"


def monotone(s: dict[str, Any]) -> bool | None:
    """Whether the mean error decreases strictly from 1 to 8 evaluations."""
    if ERR not in s:
        return None
    m = [_mean(s[ERR][K]) for K in NFES]
    if any(v is None for v in m):
        return None
    return decreasing(m)  # type: ignore[arg-type]


def plot(results: dict[str, Any], summ: dict[tuple[str, str], dict[str, Any]], path: Path) -> None:
    """Error against evaluations per problem: one colour per family throughout, the main families
    solid, their scheme, weight and stabiliser variants dashed, the other ablations dotted; one
    legend below the panels."""
    problems = list(results["meta"]["problems"])
    names = list(results["meta"]["families"])
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    fig, axes = plt.subplots(1, len(problems), figsize=(4.2 * len(problems), 4.0), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, problem in zip(axes[0], problems, strict=True):
        for (p, family), s in summ.items():
            if p != problem or ERR not in s:
                continue
            ys = [_mean(s[ERR][K]) for K in NFES]
            main = main_family(family)
            style = "-" if main == family else "--" if main is not None else ":"
            (line,) = ax.plot(
                NFES,
                ys,
                style,
                marker="o",
                markersize=3,
                linewidth=2 if style == "-" else 1.2,
                color=colours(names.index(family) % colours.N),
                label=family,
            )
            handles.setdefault(family, line)
        euler = next(
            (s["euler"] for (p, _), s in summ.items() if p == problem and "euler" in s), None
        )
        if euler:
            ks = [K for K in NFES if str(K) in euler]
            (line,) = ax.plot(
                ks, [euler[str(K)] for K in ks], ":", color="black", label="teacher Euler"
            )
            handles.setdefault("teacher Euler", line)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(NFES, [str(K) for K in NFES])
        ax.set_title(problem)
        ax.set_xlabel("network evaluations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("relative error to the exact endpoint")
    rows = max(1, -(-len(handles) // 5))
    fig.suptitle(
        f"Flow maps by residual family, {results['meta']['budget_cpu_seconds']:g} CPU-s each "
        f"(mean of {len(results['meta']['seeds'])} seed(s)); solid: main family, dashed: its "
        "scheme, weight or stabiliser, dotted: other ablations"
    )
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="lower center",
            ncol=min(5, len(handles)),
            fontsize=7,
            frameon=False,
        )
    fig.set_size_inches(4.2 * len(problems), 4.0 + 0.22 * rows)
    fig.tight_layout(rect=(0, 0.22 * rows / (4.0 + 0.22 * rows) + 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta = results["meta"]
    summ = summary(results)
    plot(results, summ, out / PLOT)
    load = f"{_load(meta.get('loadavg_start'))} at the start, {_load(meta.get('loadavg_end'))} at the end"
    lines = [
        "# Lagrangian, Eulerian and semigroup flow maps at equal CPU time",
        "",
        f"Reproduce: `{meta['command']}` (preset `{meta['preset']}`, seeds {meta['seeds']}, "
        f"{meta['budget_cpu_seconds']:g} process CPU seconds of training per run, one torch "
        f"thread, {meta['jobs']} run(s) at once). Machine: {meta.get('cpu_model', '?')}, "
        f"{meta.get('cpu_count', '?')} cores, torch {meta.get('torch', '?')}; load average {load}; "
        f"wall time {meta.get('wall_seconds', 0) / 60:.1f} min.",
        "",
        "## Setting",
        "",
        "Every run trains a flow map X(x_s, s, t) from a built-in recipe for the same budget of "
        "process CPU seconds (`train.max_seconds`, `train.clock = 'process'`; the learning rate "
        "decays over the budget), raw weights, then `evaluate()` scores its 1-, 2-, 4- and "
        "8-step samples against the exact endpoint of the same held-out noise (relative error) "
        "and against fresh data (sliced W1), and the map itself on exact states (`flow_map` of "
        "eval.json).",
        "",
        "| problem | recipe | changes | what |",
        "|---|---|---|---|",
        *(
            f"| {n} | `{p['recipe']}` | `{' '.join(p['overrides'])}` | {p['about']} |"
            for n, p in meta["problems"].items()
        ),
        "",
        "| family | overrides | what |",
        "|---|---|---|",
        *(
            f"| {n} | `{' '.join(f['overrides'])}` | {f['about']}"
            + (" (on " + ", ".join(f["problems"]) + " only)" if f["problems"] else "")
            + (" — **not available in this build**" if n in meta["unavailable"] else "")
            + " |"
            for n, f in meta["families"].items()
        ),
        "",
        "## Error against evaluations at equal CPU time",
        "",
        f"![error against evaluations]({PLOT})",
        "",
        "Mean over seeds (min–max). Teacher Euler at the same number of evaluations for scale.",
        "",
    ]
    for problem in meta["problems"]:
        rows = [(f, s) for (p, f), s in summ.items() if p == problem and ERR in s]
        lines += [
            f"**{problem}** (relative error; sliced W1 at 4 steps, data floor "
            f"{rows[0][1]['floor']:.4g})"
            if rows and rows[0][1]["floor"]
            else f"**{problem}**",
            "",
            "| family | "
            + " | ".join(f"{K} eval." for K in NFES)
            + " | SW1 @4 | iterations | monotone |",
            "|---|" + "---:|" * (len(NFES) + 2) + "---|",
        ]
        for family, s in rows:
            cells = [_cell(s[ERR][K]) for K in NFES]
            sw = _mean(s["sliced_w1"][4])
            lines.append(
                f"| {family} | "
                + " | ".join(cells)
                + f" | {'' if sw is None else f'{sw:.4g}'} | {s['iterations']:.0f} | "
                + ("yes" if monotone(s) else "no")
                + " |"
            )
        euler = rows[0][1]["euler"] if rows else {}
        lines.append(
            "| teacher Euler | "
            + " | ".join(f"{euler[str(K)]:.4g}" if str(K) in euler else "" for K in NFES)
            + " | | | |"
        )
        lines.append("")
        grid = next((s["euler_grid"] for _, s in rows if s.get("euler_grid")), None)
        if grid:
            lines += [
                f"The teacher's Euler over the whole collocation grid ({grid['steps']} steps): "
                f"{grid['rel_error']:.4g}, the solution an upwind-trained map converges to.",
                "",
            ]
    lines += [
        "## Cost, gradient variance, divergences",
        "",
        f"CPU seconds per iteration (step and optimiser update), medians of interleaved "
        f"rounds in one process, as ratios to `{REFERENCE}`; gradient variance "
        "E‖g − ḡ‖²/‖ḡ‖² over independent batches at the trained weights; divergences "
        "(loss NaN or Inf) over the seeds.",
        "",
        "| problem | family | s/iteration | ratio | grad. variance | diverged |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c in results["cost"]:
        for family, sec in c["seconds_per_iteration"].items():
            s = summ.get((c["problem"], family), {})
            gv = s.get("grad_variance")
            lines.append(
                f"| {c['problem']} | {family} | {sec:.4f} | {c['ratio'][family]:.2f} | "
                f"{'' if gv is None else f'{gv:.3g}'} | {s.get('diverged', '')}/{s.get('seeds', '')} |"
            )
    times = next((v["times"] for v in summ.values() if "times" in v), None)
    lines += [
        "",
        "## Why the multi-step error is flat",
        "",
        "The 8-step sampler restarted from the exact state x(s_a) at each of its times s_a "
        "(128 held-out trajectories, `diagnose.py`): `from s_a` is the error of the sample "
        "had it started exact there (a = 0 is the 8-step sample itself), `jump a` the error "
        "the a-th jump adds, carried to the end. Where `from s_a` stays at the whole error "
        "down to small s_a, the error is made in the last jumps, near the data, and more "
        "steps above them cannot remove it."
        + (f" The times: {', '.join(f'{t:.3g}' for t in times)}." if times else ""),
        "",
        "| problem | family | from s_a, a = 0 … 7 | jump a, a = 0 … 7 |",
        "|---|---|---|---|",
    ]
    for (p, f), v in summ.items():
        if "e_from" in v:
            lines.append(
                f"| {p} | {f} | {' · '.join(f'{e:.3g}' for e in v['e_from'])} | "
                f"{' · '.join(f'{e:.2g}' for e in v['jump'])} |"
            )
    lines += [
        "",
        "The map on exact states (eval.json's `flow_map`): mean relative error of the single "
        "jumps between consecutive times and of the jumps from each time to the end.",
        "",
        "| problem | family | 1-step sample | 8-step sample | one jump (exact start) | "
        "jump to the end (exact start) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (p, f), v in summ.items():
        if ERR not in v or v.get("rel_error_one_step") is None:
            continue
        lines.append(
            f"| {p} | {f} | {_mean(v[ERR][1]):.4g} | {_mean(v[ERR][8]):.4g} | "
            f"{v['rel_error_one_step']:.4g} | {v['rel_error_to_end']:.4g} |"
        )
    lines += [
        "",
        "## Targets",
        "",
        *targets(results, summ, out),
        "",
        "## Other budgets",
        "",
        *budget_lines(out),
        "## Reading",
        "",
        *results.get("reading", ["(written after the run; see the tables above)"]),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def targets(
    results: dict[str, Any], summ: dict[tuple[str, str], dict[str, Any]], out: Path | None = None
) -> list[str]:
    """The issue's targets, measured and stated, never asserted."""
    lines = []
    ring = {f: s for (p, f), s in summ.items() if p == "ring" and ERR in s}
    if ring:
        best = min(ring, key=lambda f: _mean(ring[f][ERR][4]))
        s = ring[best]
        e4, w4, floor = _mean(s[ERR][4]), _mean(s["sliced_w1"][4]), s["floor"]
        lines.append(
            f"- Ring, best family at 4 steps ({best}): relative error {e4:.4g} (target <= 0.02: "
            f"{'met' if e4 <= 0.02 else 'missed'}), sliced W1 {w4:.4g} = {w4 / floor:.2f}x the "
            f"data floor {floor:.4g} (target <= 1.05x: {'met' if w4 <= 1.05 * floor else 'missed'}), "
            f"at {results['meta']['budget_cpu_seconds']:g} CPU-s, {s['iterations']:.0f} iterations."
        )
    for c in results["cost"]:
        r = c["ratio"].get("eulerian")
        if r is not None:
            lines.append(
                f"- {c['problem']}: Eulerian autodiff / Lagrangian upwind cost per iteration "
                f"{r:.2f} (target <= 2: {'met' if r <= 2 else 'missed'})."
            )
    main_problems = [p for p in ("ring", "digits", "pendulum") if p in results["meta"]["problems"]]
    lines += best_settings(results, out, main_problems)
    lines += across_budgets(results, summ, out, main_problems)
    return lines


def pooled_curves(
    results: dict[str, Any], out: Path | None
) -> dict[float, dict[tuple[str, str], tuple[list[float], int, int]]]:
    """Per budget, per (problem, family): the mean error at 1, 2, 4, 8 evaluations over every
    seed of this run and of the runs kept in budgets/ at that budget (reruns pooled), how many
    of those seeds' own curves decrease, and how many seeds there are."""
    pooled: dict[float, dict[tuple[str, str], list[list[float]]]] = {}
    for res in [results, *(kept(out) if out is not None else [])]:
        here = pooled.setdefault(res["meta"]["budget_cpu_seconds"], {})
        for key, per_seed in curves(res).items():
            here.setdefault(key, []).extend(per_seed.values())
    return {
        b: {
            k: (
                [statistics.mean(c[j] for c in cs) for j in range(len(NFES))],
                sum(decreasing(c) for c in cs),
                len(cs),
            )
            for k, cs in by.items()
        }
        for b, by in pooled.items()
    }


def best_settings(results: dict[str, Any], out: Path | None, main_problems: list[str]) -> list[str]:
    """The monotone target, each main family at its best setting (scheme, weights,
    stabiliser) per problem and budget: the variant of lowest geometric-mean error over 1, 2,
    4 and 8 evaluations, whether its mean error decreases from 1 to 8, and on how many seeds
    their own curves do."""
    mains = [f for f, v in results["meta"]["families"].items() if main_family(f) == f]
    by_budget = pooled_curves(results, out)
    lines = [
        "",
        "Each main family at its best setting per problem (of itself and the scheme, weight and "
        "stabiliser variants run beside it at that budget, the lowest geometric-mean error over "
        "1, 2, 4 and 8 evaluations), per CPU budget, over every seed at that budget: whether the "
        "mean error decreases from 1 to 8 evaluations, and on how many seeds each seed's own "
        "curve does (target: the mean, on at least 2 of the "
        f"{len(main_problems)} problems).",
        "",
    ]
    met_at: dict[float, list[bool]] = {}
    for f in mains:
        cells = []
        for budget, curves_here in sorted(by_budget.items()):
            picks = []
            for p in main_problems:
                options = {
                    v: c for (q, v), c in curves_here.items() if q == p and main_family(v) == f
                }
                if not options:
                    continue
                best = min(options, key=lambda v: math.prod(options[v][0]) ** (1 / len(NFES)))
                curve, down, seeds = options[best]
                picks.append((p, best, decreasing(curve), curve, f"{down} of {seeds} seeds"))
            if not picks:
                continue
            count = sum(pick[2] for pick in picks)
            met_at.setdefault(budget, []).append(count >= 2)
            cells.append(
                f"{budget:g} s: "
                + " · ".join(
                    f"{p} ({v}) {'yes' if d else 'no'} ("
                    + " / ".join(f"{x:.3g}" for x in c)
                    + f"; {n})"
                    for p, v, d, c, n in picks
                )
                + f" — {count} of {len(picks)}"
            )
        lines.append(f"- {f}: " + "; ".join(cells) + ".")
    every = [f"{b:g} s" for b, ok in sorted(met_at.items()) if len(ok) == len(mains) and all(ok)]
    lines += [
        "",
        "Budgets at which every main family, at its best setting, decreases on at least two "
        f"problems: {', '.join(every) or 'none'}.",
    ]
    return lines


def across_budgets(
    results: dict[str, Any],
    summ: dict[tuple[str, str], dict[str, Any]],
    out: Path | None,
    main_problems: list[str],
) -> list[str]:
    """Per family, per problem: whether its mean error decreases from 1 to 8 evaluations in
    this run and in each run kept in budgets/, by budget."""
    here = results["meta"]["budget_cpu_seconds"]
    by: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for (p, f), s in summ.items():
        if p in main_problems and monotone(s) is not None:
            by.setdefault((f, p), []).append((here, bool(monotone(s))))
    for res in kept(out) if out is not None else []:
        budget = res["meta"]["budget_cpu_seconds"]
        for (p, f), per_seed in curves(res).items():
            if p in main_problems:
                n = len(per_seed)
                mean = [sum(c[j] for c in per_seed.values()) / n for j in range(len(NFES))]
                by.setdefault((f, p), []).append((budget, decreasing(mean)))
    if not by:
        return []
    lines = [
        "",
        "Every measurement of the same target, this run's and those under Other budgets: per "
        "family and problem, each run's CPU-s per map and whether its mean error decreases from "
        "1 to 8 evaluations.",
        "",
    ]
    for f in dict.fromkeys(f for f, _ in by):
        cells, count = [], 0
        for p in main_problems:
            got = sorted(by.get((f, p), []))
            if got:
                count += any(d for _, d in got)
                cells.append(
                    f"{p} " + " · ".join(f"{b:g} s {'yes' if d else 'no'}" for b, d in got)
                )
        lines.append(
            f"- {f}: " + "; ".join(cells) + f" — decreasing in some run on {count} of "
            f"{len(main_problems)}."
        )
    return lines


def _load(values: list[float] | None) -> str:
    return " / ".join(f"{v:.1f}" for v in values) if values else "?"
