"""The report's sections, one per part of the GPU check."""

from __future__ import annotations

from typing import Any


def fmt(x: Any, fmt: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, fmt)
    return str(x)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _part(record: dict[str, Any], name: str) -> tuple[dict[str, Any], list[str]]:
    p = record["parts"].get(name)
    if p is None:
        return {}, ["Not run (not in `--parts`)."]
    head = [f"Status: {p.get('status')}"]
    if p.get("wall_s") is not None:
        est = record["settings"].get("estimates", {}).get(name)
        head[0] += (
            f"; {p['wall_s']:.0f} s of wall time ({fmt(p.get('cpu_s'), '.0f')} CPU-s), cap "
            f"{p.get('budget_s', 0):.0f} s, estimate {fmt(est, '.0f')} s."
        )
    res = p.get("results", {})
    head += [f"Note: {n}" for n in res.get("notes", [])]
    return res, head


def _config_table(configs: dict[str, dict[str, Any]]) -> list[str]:
    head = [
        "configuration",
        "precision",
        "TF32 (matmul, conv)",
        "images/s",
        "s/iter (spread)",
        "FLOPs/iter",
        "TFLOP/s",
        "MFU (spec peak)",
        "MFU (measured matmul)",
        "peak GiB (resident + step)",
        "parameters",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in configs.items():
        if not isinstance(r, dict):
            continue
        flops = r.get("flops_per_iteration")
        peak = "-"
        if r.get("peak_gib") is not None:
            peak = f"{r['peak_gib']:.2f} ({r['resident_gib']:.2f} + {r['transient_gib']:.2f})"
        row = [
            name,
            r.get("precision", "-"),
            ", ".join("on" if x else "off" for x in r.get("tf32", [])),
            fmt(r.get("images_per_s")),
            f"{fmt(r.get('seconds_per_iteration'), '.4g')} ({pct(r.get('spread'))})",
            "-" if not flops else f"{flops / 1e12:.3g} T",
            fmt(r.get("achieved_tflops")),
            pct(r.get("mfu_spec")),
            pct(r.get("mfu_measured_matmul")),
            peak,
            fmt(r.get("parameters")),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _ratios(d: dict[str, Any]) -> list[str]:
    return [f"- {k}: **{fmt(v)}**" for k, v in d.items()]


def official(record: dict[str, Any]) -> list[str]:
    """Throughput against the official code."""
    lines: list[str] = []
    res, head = _part(record, "official")
    lines += ["## Training throughput against the official code", "", *head, ""]
    lines += [
        "One PID iteration of DDPM++ CIFAR-10 (EDM's architecture, random weights, N = 250, "
        "upwind, RAdam, three EMAs), ours through `Trainer` (`teacher.kind = 'edm_random'`, "
        "`loss.distance = 'l2'`), theirs through their own `OneShotDenoiser.ode_losses`, "
        "`MixedPrecisionTrainer` and `update_ema` (`loss_norm = 'l2'`: their LPIPS needs piq "
        "and VGG-16 weights from the network; both sides compute the same mean squared "
        "difference). Their code has no bf16 path; it runs in fp32, under PyTorch's default "
        "switches (cuDNN TF32 on, matmul TF32 off) in its own training and with TF32 off beside "
        "our fp32.",
        "",
    ]
    if res.get("official_skipped"):
        lines += [f"Official code: {res['official_skipped']}.", ""]
    if res.get("official_stand_ins"):
        lines += [
            "Packages their modules import but the step never calls, replaced by empty "
            f"stand-ins here: {', '.join(res['official_stand_ins'])}. Official commit "
            f"{res.get('official_commit')}.",
            "",
        ]
    if res.get("configs"):
        lines += _config_table(res["configs"]) + [""]
    if res.get("ratios"):
        lines += ["Ratios of images/s (same process, alternating rounds):", ""]
        lines += _ratios({k: v for k, v in res["ratios"].items() if v is not None}) + [""]
    if res.get("matmul_ceiling"):
        c = res["matmul_ceiling"]
        lines += [
            f"Measured matrix-product ceiling: {c['n']}^3 {c['dtype']} on random data, "
            f"{c['tflops']:.3g} TFLOP/s.",
            "",
        ]
    return lines


def compiled(record: dict[str, Any]) -> list[str]:
    """torch.compile off and on."""
    s = record["settings"]
    lines: list[str] = []
    res, head = _part(record, "compile")
    lines += ["## torch.compile off and on (ours)", "", *head, ""]
    lines += [
        f"Backend: {res.get('backend', '-')} (`train.compile = true` for inductor). "
        "The compiled configuration's FLOPs are the eager one's; its warm-up holds the "
        "compilation.",
        "",
    ]
    for prec in s["compile_precisions"]:
        if isinstance(res.get(prec), dict):
            lines += [f"{prec}:", "", *_config_table(res[prec]), ""]
            for name, r in res[prec].items():
                if "compiled" in name and r.get("warmup_s"):
                    lines += [
                        f"Compilation (warm-up steps): "
                        f"{', '.join(f'{x:.1f}' for x in r['warmup_s'])} s.",
                        "",
                    ]
            lines += [
                f"compiled / eager images/s: **{fmt(res.get(f'{prec} compiled / eager'))}**",
                "",
            ]
    return lines


def schemes(record: dict[str, Any]) -> list[str]:
    """The residual schemes and the SDPA probe."""
    lines: list[str] = []
    res, head = _part(record, "schemes")
    lines += ["## Residual schemes on the GPU", "", *head, ""]
    if res.get("configs"):
        lines += _config_table(res["configs"]) + [""]
    if res.get("cost_ratio_to_upwind"):
        lines += ["Seconds per iteration as a ratio to upwind:", ""]
        lines += _ratios(res["cost_ratio_to_upwind"]) + [""]
    if res.get("peak_memory_ratio_to_upwind"):
        lines += ["Peak memory as a ratio to upwind:", ""]
        lines += _ratios(res["peak_memory_ratio_to_upwind"]) + [""]
    if res.get("sdpa"):
        sd = res["sdpa"]
        lines += [
            f"Scaled dot-product attention backends at {tuple(sd['shape'])} {sd['dtype']} "
            "(batch, heads, tokens, channels; DDPM++'s 16 x 16 attention): does the forward "
            "run, and does `torch.func.jvp` (forward mode) run; median milliseconds.",
            "",
            "| backend | forward | forward ms | jvp | jvp ms |",
            "|---|---|---|---|---|",
        ]
        for b, r in sd.items():
            if isinstance(r, dict):
                lines.append(
                    f"| {b} | {r.get('forward')} | {fmt(r.get('forward_ms'))} | "
                    f"{r.get('jvp', '-')} | {fmt(r.get('jvp_ms'))} |"
                )
        lines += [""]
    return lines


def torchrun(record: dict[str, Any]) -> list[str]:
    """The torchrun kill, resume and sampling."""
    lines: list[str] = []
    res, head = _part(record, "torchrun")
    lines += ["## One-GPU torchrun: kill, resume, bit identity, sampling", "", *head, ""]
    if res.get("command"):
        lines += [
            "Command (run A; run B the same into another folder, then `--resume`):",
            "",
            "```",
            res["command"],
            "```",
            "",
        ]
    for key, what in (
        ("run_a", "run A (straight through)"),
        ("run_b_killed", "run B (killed)"),
        ("run_b_resumed", "run B resumed"),
    ):
        r = res.get(key)
        if r:
            lines.append(
                f"- {what}: exit {r.get('returncode')}, {fmt(r.get('wall_s'), '.1f')} s wall"
                + (
                    f", killed after step {r['killed_after_step']}"
                    if r.get("killed_after_step")
                    else ""
                )
                + (
                    f", last logged step {r['step']} at {fmt(r.get('it_per_s'))} it/s "
                    f"({fmt(r.get('images_per_s'))} images/s)"
                    if r.get("step")
                    else ""
                )
                + (f"; error: {r['error']}" if r.get("error") else "")
                + (
                    f"; operations without a deterministic implementation: "
                    f"{'; '.join(r['nondeterministic_ops'])}"
                    if r.get("nondeterministic_ops")
                    else ""
                )
            )
    if res.get("resumed_from"):
        lines.append(f"- resumed from {res['resumed_from']}")
    bi = res.get("bit_identical")
    if bi:
        lines.append(
            f"- final states (steps {bi['steps']}): {bi['tensors_compared']} tensors compared "
            "(weights, EMAs, optimiser state): "
            + ("**bit-identical**" if bi["identical"] else f"**differ**: {bi['first_difference']}")
        )
    if res.get("sample"):
        sm = res["sample"]
        lines.append(
            f"- `{sm['command']}`: exit {sm['returncode']}, {sm['images']} images in "
            f"{sm['wall_s']:.1f} s ({fmt(sm.get('images_per_s'))} images/s, "
            "start-up and checkpoint loading included)"
        )
    lines += [""]
    return lines


def fid(record: dict[str, Any]) -> list[str]:
    """FID throughput."""
    lines: list[str] = []
    res, head = _part(record, "fid")
    lines += ["## FID throughput", "", *head, ""]
    if res.get("detector"):
        d = res["detector"]
        lines += [
            f"Random TorchScript stand-in of Inception's interface: uint8 in, resized to "
            f"{d['resolution']}^2, {len(d['widths'])} stride-2 convolutions "
            f"({', '.join(map(str, d['widths']))} channels), {d['features']} features; "
            f"{d['flops_per_image'] / 1e9:.2f} GFLOP per image (Inception-v3: about "
            "11.5).",
            "",
        ]
    if res.get("images"):
        lines += [
            f"Images: {res['images'].get('source')}"
            + (
                f" ({res['images']['wall_s']:.1f} s, "
                f"{fmt(res['images'].get('images_per_s'))} images/s)"
                if res["images"].get("wall_s")
                else ""
            )
            + ".",
            "",
        ]
    if res.get("fid"):
        f = res["fid"]
        lines += [f"`{f['command']}` on {f['images']} images:", ""]
        for k, r in enumerate(f["runs"]):
            lines.append(
                f"- run {k + 1}: exit {r['returncode']}, {r['wall_s']:.1f} s, "
                f"**{r['images_per_s']:.0f} images/s**"
            )
        lines += [""]
    return lines
