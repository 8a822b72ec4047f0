"""``<device>.md`` and ``.json`` of the GPU check: every number with the command that made it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks.gpu.sections import compiled, fid, fmt, official, pct, schemes, torchrun

#: the issue's targets, recorded beside the numbers (never asserted)
TARGETS = {
    "speed": "ours bf16 >= 1.5x the official code's images/s",
    "mfu": "MFU of our bf16 step >= 40 %",
    "autodiff": "autodiff <= 2x upwind per iteration",
    "resume": "resume after a kill bit-identical in deterministic mode",
}


def render(record: dict[str, Any]) -> str:
    m = record["machine"]
    s = record["settings"]
    lines = [
        f"# GPU check on {m.get('device_name')}",
        "",
        f"Device: {m.get('device_name')} (compute capability {m.get('capability', '-')}, "
        f"{m.get('multiprocessors', '-')} SMs, {fmt(m.get('memory_gib'), '.0f')} GiB); driver "
        f"{m.get('driver', '-')}; nvidia-smi (driver, SM clock, max SM clock, power limit, "
        f"temperature): {m.get('nvidia_smi', '-')}. torch {m['torch']}, CUDA {m.get('cuda')}, "
        f"cuDNN {m.get('cudnn')}, Python {m['python']}; host {m['cpu']}, {m['cores']} cores; "
        f"load average at the start {', '.join(f'{x:.2f}' for x in m['load_average'])}; "
        f"odedistill commit {m.get('git_commit')}; {record['date']}.",
        "",
        "Command (every number below; one part alone: add `--parts NAME`):",
        "",
        "```",
        record["command"],
        "```",
        "",
        f"Preset `{s['name']}`: batch {s['batch']} images per step (the paper's 512 over its 8 "
        f"GPUs), {s['warmup']} warm-up step(s) per configuration, then up to {s['rounds']} "
        f"alternating rounds of {s['steps']} timed step(s); each step timed with CUDA events "
        "after a synchronisation (host clock on a CPU), the median reported, the spread "
        "(max - min) / median beside it. Wall time of the whole check: "
        f"{record.get('wall_s', 0):.0f} s (cap {s['total_seconds']:.0f} s).",
        "",
    ]
    lines += official(record) + compiled(record)
    lines += ["## Model FLOP utilisation of our bf16 step", ""]
    lines += (_mfu_rows(record) or ["No bf16 step was measured."]) + [""]
    lines += schemes(record) + torchrun(record) + fid(record)
    lines += ["## Targets (recorded, not asserted)", "", *_targets(record), ""]
    return "\n".join(lines)


def _mfu_rows(record: dict[str, Any]) -> list[str]:
    rows = []
    off = record["parts"].get("official", {}).get("results", {}).get("configs", {})
    comp = record["parts"].get("compile", {}).get("results", {}).get("bf16", {})
    for label, r in (("eager", off.get("ours bf16")), ("compiled", comp.get("ours bf16 compiled"))):
        if r and r.get("achieved_tflops"):
            peak = (
                f"**{pct(r['mfu_spec'])}** of {fmt(r.get('peak_spec_tflops'))} TFLOP/s (dense "
                f"bf16, H100/H200 SXM datasheet), {pct(r.get('mfu_measured_matmul'))} of the "
                "measured matrix product"
                if r.get("mfu_spec") is not None
                else "no MFU on a CPU"
            )
            rows.append(
                f"- {label}: {r['flops_per_iteration'] / 1e12:.3g} TFLOP per iteration "
                "(`FlopCounterMode`: matmuls, convolutions, attention of the student's forward "
                f"and backward and the teacher's forward) in {r['seconds_per_iteration']:.4g} s "
                f"= {r['achieved_tflops']:.3g} TFLOP/s: {peak}"
            )
    return rows


def _targets(record: dict[str, Any]) -> list[str]:
    parts = record["parts"]
    get = lambda p, *ks: _dig(parts.get(p, {}).get("results", {}), ks)  # noqa: E731
    speed = get("official", "ratios", "ours bf16 / official fp32")
    mfus = [
        get("official", "configs", "ours bf16", "mfu_spec"),
        get("compile", "bf16", "ours bf16 compiled", "mfu_spec"),
    ]
    mfu = max((x for x in mfus if x is not None), default=None)
    ad = get("schemes", "cost_ratio_to_upwind", "autodiff")
    same = get("torchrun", "bit_identical", "identical")
    out = []
    for key, value, ok in (
        ("speed", fmt(speed), None if speed is None else speed >= 1.5),
        ("mfu", pct(mfu), None if mfu is None else mfu >= 0.40),
        ("autodiff", fmt(ad), None if ad is None else ad <= 2.0),
        ("resume", fmt(same), same),
    ):
        verdict = "not measured" if ok is None else ("met" if ok else "**not met**")
        out.append(f"- {TARGETS[key]}: {value} ({verdict})")
    return out


def _dig(d: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def write(stem: Path, record: dict[str, Any]) -> None:
    """``stem``.json and ``stem``.md, each written atomically (the JSON first: a report that
    cannot be rendered still leaves every number)."""
    _atomic(stem.with_suffix(".json"), json.dumps(record, indent=2, default=str) + "\n")
    try:
        text = render(record)
    except Exception as e:  # the numbers are in the JSON; say why the table is missing
        text = f"# GPU check\n\nThe report could not be rendered ({type(e).__name__}: {e}); "
        text += f"every number is in {stem.with_suffix('.json').name}.\n"
    _atomic(stem.with_suffix(".md"), text)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
