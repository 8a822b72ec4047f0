"""report.md, results.json and fd_vs_nfe.png of the learned-teacher benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from odedistill import atomic_write_json, atomic_write_text, plot_curves

PLOT = "fd_vs_nfe.png"
SECTIONS = (
    "Setting",
    "The teacher",
    "FD against evaluations",
    "Where PID lands",
    "Targets",
    "Flow-map screens",
    "Other budgets",
    "Reproduce",
)
TEACHER_JSON = "teacher.json"  # written by `python -m benchmarks.learned_teacher train`


def _curve(t: dict[str, Any], method: str) -> dict[int, float]:
    return {int(k): v for k, v in t["curve"][method].items()}


def lands(fd: float, curve: dict[int, float]) -> str:
    """Where ``fd`` falls on a teacher curve: 'between K and K' evaluations' (interpolated in
    the order of the curve's points), or beyond its ends."""
    xs = sorted(curve)
    if fd <= min(curve.values()):
        return f"at or below its best ({min(curve.values()):.3g})"
    if fd >= curve[xs[0]]:
        return f"above {xs[0]} evaluation ({curve[xs[0]]:.3g})"
    for a, b in zip(xs, xs[1:], strict=False):
        if curve[b] <= fd <= curve[a]:
            return f"between {a} ({curve[a]:.3g}) and {b} ({curve[b]:.3g}) evaluations"
    first = next(x for x in xs if curve[x] <= fd)
    return f"first reached at {first} evaluations ({curve[first]:.3g})"


def targets(results: dict[str, Any]) -> list[tuple[str, float, float, bool]]:
    """(target, value, bound, met) of the benchmark's three targets."""
    t = results["teacher"]
    euler, heun = _curve(t, "euler"), _curve(t, "heun")
    top = max(heun)
    one = min(r["fd"]["1"] for r in results["students"])
    four = [r["fd"]["4"] for r in results["students"] if "4" in r["fd"]]
    rows = [
        (f"teacher Heun-{top} FD <= 2 x data floor", heun[top], 2 * t["data_floor"]),
    ]
    if 4 in euler:
        rows.append(("best one-step student FD <= teacher Euler-4 FD", one, euler[4]))
    if four:
        rows.append(
            (f"best 4-step flow map FD <= 1.5 x teacher Heun-{top}", min(four), 1.5 * heun[top])
        )
    return [(name, v, b, v <= b) for name, v, b in rows]


def _teacher_lines(out: Path) -> list[str]:
    """The teacher's training cost, reproduction and EDM-sampler grid, from teacher.json."""
    path = out / TEACHER_JSON
    if not path.is_file():
        return [
            "(no teacher.json here: `python -m benchmarks.learned_teacher train` writes it)",
            "",
        ]
    t = json.loads(path.read_text())
    st = t["settings"]
    lines = [
        f"{t['parameters']:,} parameters; {st['iterations']} Adam steps of batch {st['batch']} "
        f"(lr {st['lr']:g}, EMA {st['ema']}) in {t['cpu_seconds']:.0f} CPU seconds, seed "
        f"{st['seed']}, one thread.",
    ]
    if t.get("reproduction"):
        lines += ["", f"Reproduction: {t['reproduction']}"]
    lines += ["", "EDM's sampler (Heun, 18 steps, 35 evaluations), seeds 0-63:", ""]
    lines += ["![teacher samples](teacher_heun_grid.png)", ""]
    return lines


def _machine(meta: dict[str, Any]) -> str:
    """Platform, cores, and the load average (1, 5, 15 minutes) at the start and end."""
    m = meta["machine"]

    def load(x):
        return "?" if x is None else "/".join(f"{v:.2f}" for v in x)

    out = f"{m.get('platform', '?')}, {m.get('cpu_count', '?')} cores ({m.get('cpu_model', '?')})"
    if "load_average_start" in meta:
        out += f", load average {load(meta['load_average_start'])} at the start"
        return out + f" ({meta.get('started', '?')}) and {load(m.get('load_average'))} at the end"
    return out + f", load average {load(m.get('load_average'))}"


def _screen_lines(out: Path) -> list[str]:
    """One row per ``screens/*.json`` (``python -m benchmarks.learned_teacher.screen``)."""
    files = sorted((out / "screens").glob("*.json"))
    if not files:
        return ["(none here: `python -m benchmarks.learned_teacher.screen` writes them)", ""]
    lines = [
        "One change at a time to the flow map, each one training run at a shorter budget; "
        "FD at 1, 2, 4 and 8 steps of the raw weights and of each EMA of that run (machine and "
        "load average in screens/*.json).",
        "",
        "| screen | CPU s | iterations | weights | FD at 1, 2, 4, 8 steps | command |",
        "|---|---|---|---|---|---|",
    ]
    for f in files:
        r = json.loads(f.read_text())
        for j, (w, fd) in enumerate(r["fd"].items()):
            fds = ", ".join(f"{fd[k]:.3g}" for k in sorted(fd, key=int))
            command = "" if j else f"`{r['command']}`"
            lines += [
                f"| {r['name']} | {r['budget']:g} | {r['iterations']} | {w} | {fds} | {command} |"
            ]
    return [*lines, ""]


def _budget_lines(out: Path, results: dict[str, Any]) -> list[str]:
    """Every student's FD at this budget and at each earlier one kept in ``budgets/*.json``
    (the results.json of a whole benchmark run at another ``--budget``)."""
    runs = [results] + [json.loads(f.read_text()) for f in sorted((out / "budgets").glob("*.json"))]
    if len(runs) == 1:
        return ["(none here: copy a results.json of another --budget to budgets/)", ""]
    runs.sort(key=lambda r: r["settings"]["budget"])
    lines = [
        "The whole benchmark at other CPU budgets per student (the teacher's curves are the "
        "same: seeded); each run's machine and load average in its file.",
        "",
        "| CPU s | student | scheme | iterations | FD by evaluations |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        for st in r["students"]:
            fd = ", ".join(f"{k}: {v:.3g}" for k, v in st["fd"].items())
            lines += [
                f"| {r['settings']['budget']:g} | {st['student']} | {st['scheme']} | "
                f"{st['iterations']} | {fd} |"
            ]
    return [*lines, ""]


def write_report(results: dict[str, Any], out: Path, command: str) -> None:
    t = results["teacher"]
    st = results["settings"]
    euler, heun = _curve(t, "euler"), _curve(t, "heun")
    points = {
        f"{r['student']} ({r['scheme']})": {int(k): v for k, v in r["fd"].items()}
        for r in results["students"]
    }
    plot_curves(
        {"teacher, Euler": euler, "teacher, Heun": heun},
        points,
        out / PLOT,
        floor=t["data_floor"],
        xlabel="network evaluations",
        ylabel=f"digits FD ({t['num_images']} images vs held-out split)",
        title=f"learned digits teacher; students trained {st['budget']:g} CPU s each",
    )
    lines = ["# A learned teacher on the digits: FD against evaluations", ""]
    lines += ["## Setting", ""]
    lines += [
        "Teacher: `odedistill/data/digits/teacher.safetensors`, a DDPM++-style SongUNet (EDM "
        "preconditioning) trained on the digits' train split by "
        "`python -m benchmarks.learned_teacher train`. Detector: the digits CNN "
        "`odedistill/data/digits/detector.pt`; FD is computed by the FID code path "
        f"(FIDScorer) on seeds {t['seeds']} against the held-out split's statistics.",
        f"Students: recipe `digits_learned` (student = a copy of the teacher's network), "
        f"N = {st['N']}, batch {st['batch']}, {st['budget']:g} CPU seconds of training each "
        "(process clock, one thread), EMA weights scored. Machine: "
        f"{_machine(results['meta'])}.",
        "",
    ]
    lines += ["## The teacher", ""] + _teacher_lines(out)
    lines += ["## FD against evaluations", "", f"![FD against evaluations]({PLOT})", ""]
    lines += ["| sampler | " + " | ".join(str(n) for n in sorted(heun)) + " |"]
    lines += ["|---|" + "---|" * len(heun)]
    for name, c in (("teacher, Euler", euler), ("teacher, Heun", heun)):
        lines += [f"| {name} | " + " | ".join(f"{c[n]:.3g}" for n in sorted(c)) + " |"]
    lines += ["", "| student | scheme | iterations | FD by evaluations |", "|---|---|---|---|"]
    for r in results["students"]:
        fd = ", ".join(f"{k}: {v:.3g}" for k, v in r["fd"].items())
        lines += [f"| {r['student']} | {r['scheme']} | {r['iterations']} | {fd} |"]
    lines += ["", f"Data floor (train split against held-out split): {t['data_floor']:.3g}.", ""]
    lines += ["## Where PID lands", ""]
    for r in results["students"]:
        fd = r["fd"]["1"]
        lines += [
            f"- {r['student']} ({r['scheme']}), one step, FD {fd:.3g}: on the teacher's Euler "
            f"curve {lands(fd, euler)}; on its Heun curve {lands(fd, heun)}."
        ]
    lines += ["", "## Targets", "", "| target | value | bound | met |", "|---|---|---|---|"]
    for name, v, b, ok in targets(results):
        lines += [f"| {name} | {v:.3g} | {b:.3g} | {'yes' if ok else 'no'} |"]
    lines += ["", "## Flow-map screens", "", *_screen_lines(out)]
    lines += ["## Other budgets", "", *_budget_lines(out, results)]
    lines += ["## Reproduce", "", f"`{command}`", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    atomic_write_json(out / "results.json", results)
