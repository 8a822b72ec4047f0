"""report.md and the error-against-NFE plot of the flow-map benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.flowmap.settings import NFES  # noqa: E402

PLOT = "error_vs_nfe.png"
SECTIONS = (
    "Setting",
    "Error against NFE",
    "Sliced W1 against NFE",
    "Cost per iteration",
    "Reading",
)
METRICS = {"trajectory_rel_error": "relative error to the exact endpoint", "sliced_w1": "sliced W1"}


def _rows(results: dict[str, Any], system: str, metric: str) -> list[tuple[str, dict[int, float]]]:
    """(label, {nfe: value}) for every student and the teacher's two solvers on ``system``."""
    rows = []
    teacher = None
    for r in results["students"]:
        if r["system"] != system:
            continue
        label = f"{'flow map' if r['student'] == 'flowmap' else 'PID'}, {r['scheme']}"
        rows.append((label, {int(k): v[metric] for k, v in r["by_nfe"].items()}))
        teacher = r["teacher"]
    if teacher is not None:
        for solver in ("euler", "heun"):
            rows.append(
                (
                    f"teacher {solver.capitalize()}",
                    {int(k): v[metric] for k, v in teacher[solver].items()},
                )
            )
    return rows


def _table(results: dict[str, Any], metric: str) -> list[str]:
    lines = []
    for system in results["meta"]["systems"]:
        lines += [
            f"**{system}**",
            "",
            "| sampler | " + " | ".join(f"NFE {n}" for n in NFES) + " |",
            "|---|" + "---:|" * len(NFES),
        ]
        for label, values in _rows(results, system, metric):
            cells = [f"{values[n]:.4g}" if n in values else "" for n in NFES]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        floor = next(
            (r["data_floor_sliced_w1"] for r in results["students"] if r["system"] == system), None
        )
        if metric == "sliced_w1" and floor is not None:
            lines.append(f"| data floor | {floor:.4g} |" + " |" * (len(NFES) - 1))
        lines.append("")
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    systems = list(results["meta"]["systems"])
    fig, axes = plt.subplots(2, len(systems), figsize=(4.2 * len(systems), 7), squeeze=False)
    for j, system in enumerate(systems):
        for i, metric in enumerate(METRICS):
            ax = axes[i][j]
            rows = _rows(results, system, metric)
            for label, values in rows:
                xs = sorted(values)
                style = "--" if label.startswith("teacher") else ("o" if len(xs) == 1 else "-o")
                ax.plot(xs, [values[x] for x in xs], style, label=label, markersize=4)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            # Heun's corrector right after a long step can blow up: keep the students in view
            top = max(v for label, vals in rows if label != "teacher Heun" for v in vals.values())
            ax.set_ylim(top=3 * top)
            ax.set_xticks(NFES, [str(n) for n in NFES])
            ax.set_xlabel("network evaluations (NFE)")
            ax.set_title(f"{system}: {metric}")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> Path:
    m = results["meta"]
    plot(results, out / PLOT)
    lines = [
        "# Flow maps against PID and the teacher's solvers",
        "",
        f"Reproduce: `{m['command']}` (preset `{m['preset']}`, seed {m['seed']}, "
        f"{m['threads']} torch thread(s)). Machine: {m.get('cpu_model', '?')}, torch {m.get('torch', '?')}; "
        f"load average {_load(m.get('loadavg_start'))} at the start, {_load(m.get('loadavg_end'))} at the end.",
        "",
        "## Setting",
        "",
        "Each system starts from a built-in flow-map recipe; PID students use the same recipe "
        "with `student.kind = 'pid'` (same network, optimiser, schedule and budget). Errors are "
        "eval.json's: the mean relative error to the exact endpoint of the same held-out noise, "
        "and the sliced W1 distance to fresh data. A K-step flow-map sample costs K evaluations; "
        "the PID student has only K = 1.",
        "",
        "| system | recipe | iterations | changes | what |",
        "|---|---|---:|---|---|",
    ]
    for name, s in m["systems"].items():
        lines.append(
            f"| {name} | `{s['recipe']}` | {s['iterations']} | "
            f"`{' '.join(s['overrides'])}` | {s['about']} |"
        )
    lines += ["", "## Error against NFE", "", f"![error against NFE]({PLOT})", ""]
    lines += _table(results, "trajectory_rel_error")
    lines += ["## Sliced W1 against NFE", ""] + _table(results, "sliced_w1")
    lines += [
        "## Cost per iteration",
        "",
        "Seconds per training iteration (step and optimiser update), PID and flow-map students "
        "timed in interleaved rounds in one process; the flow map adds one forward pass without "
        "gradient for its source states.",
        "",
        "| system | scheme | PID s/it | flow map s/it | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for c in results["cost"]:
        s = c["seconds_per_iteration"]
        lines.append(
            f"| {c['system']} | {c['scheme']} | {s['pid']:.4f} | {s['flowmap']:.4f} | "
            f"{c['ratio']:.2f} |"
        )
    lines += [
        "",
        "## Reading",
        "",
        "The budgets (Setting) keep the whole benchmark to about an hour on two CPU cores shared with another job, "
        "well short of the recipes' (the `flowmap` recipe trains a 256-wide MLP for 10,000 "
        "iterations; its numbers are in docs/flowmaps.md). Heun's values above the plots' "
        "range are its corrector evaluated at t_min right after a long step.",
        "",
    ]
    lines += _reading(results)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(values: list[float] | None) -> str:
    return "?" if not values else " / ".join(f"{v:.1f}" for v in values)


def _reading(results: dict[str, Any]) -> list[str]:
    """One line per system and scheme: the flow map's best NFE against PID's one step."""
    out = []
    for r in results["students"]:
        if r["student"] != "flowmap":
            continue
        pid = next(
            (
                p
                for p in results["students"]
                if p["student"] == "pid"
                and p["system"] == r["system"]
                and p["scheme"] == r["scheme"]
            ),
            None,
        )
        if pid is None:
            continue
        e = {int(k): v["trajectory_rel_error"] for k, v in r["by_nfe"].items()}
        p1 = pid["by_nfe"]["1"]["trajectory_rel_error"]
        best = min(e, key=e.get)
        out.append(
            f"- {r['system']}, {r['scheme']}: flow map {e[1]:.4g} at 1 NFE and "
            f"{e[best]:.4g} at {best} NFE, PID {p1:.4g} at 1 NFE "
            f"({p1 / e[best]:.2f}x the flow map's best)."
        )
    return out
