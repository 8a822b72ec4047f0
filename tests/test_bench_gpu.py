"""The GPU check's CPU dry run (``python -m benchmarks.gpu --dry-run``): every part runs at toy sizes.

The dry run runs once per module, its parts but FID in the test's process (the torchrun part
still launches torchrun); the FID part runs as the GPU run runs every part, in a process of its
own under its wall-time cap. The assertions are about what the parts found (a resume after SIGKILL is
bit-identical, the FID of samples against their own statistics is zero, which attention
backends have a forward-mode rule), never about timings. The comparison with the official PID
code runs only where a clone of pantheon5100/pid_diffusion sits at ``.official/pid_diffusion``
(or ``$ODEDISTILL_OFFICIAL_PID``); without one the part times ours alone and says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from benchmarks.gpu.measure import Deadline, PartLog
from benchmarks.gpu.run import main
from benchmarks.gpu.settings import DRY_RUN, PARTS
from benchmarks.gpu.steps import Candidate, alternate
from odedistill.schemes import SCHEMES

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = Path(os.environ.get("ODEDISTILL_OFFICIAL_PID", ROOT / ".official" / "pid_diffusion"))
HAVE_OFFICIAL = (OFFICIAL / "cm" / "karras_diffusion.py").is_file()


# the official network's softmax is a torch.jit.script function
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

IN_PROCESS = [p for p in PARTS if p != "fid"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    argv = ["--dry-run", "--in-process", "--parts", ",".join(IN_PROCESS), "--out", str(out)]
    argv += ["--official", str(OFFICIAL)] if HAVE_OFFICIAL else []
    threads = torch.get_num_threads()
    try:
        main(argv)
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "cpu.json").read_text()), (out / "cpu.md").read_text()


@pytest.fixture(scope="module")
def fid_spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check-fid")
    main(["--dry-run", "--parts", "fid", "--out", str(out)])
    return json.loads((out / "cpu.json").read_text())


def results(record: dict, part: str) -> dict:
    return record["parts"][part]["results"]


def test_every_part_runs_and_is_reported(dry_run):
    record, md = dry_run
    assert list(record["parts"]) == IN_PROCESS
    for name, part in record["parts"].items():
        assert part["status"] == "ok", (name, part["status"])
        assert part["results"].get("finished"), name
    assert record["machine"]["device_name"] == "cpu"
    assert record["machine"]["torch"] == torch.__version__
    assert record["command"].startswith("python -m benchmarks.gpu --dry-run")
    headings = [ln[3:] for ln in md.splitlines() if ln.startswith("## ")]
    assert len(headings) == 7 and headings[-1].startswith("Targets")
    assert "Not run (not in `--parts`)." in md.split("## FID throughput")[1]


def test_resume_after_sigkill_is_bit_identical(dry_run):
    r = results(dry_run[0], "torchrun")
    assert r["run_a"]["returncode"] == 0 and r["run_b_resumed"]["returncode"] == 0
    assert r["run_b_killed"]["killed_after_step"] >= DRY_RUN.kill_at_step
    assert r["resumed_from"] == "ckpt-00000002.pt"  # the last periodic checkpoint before the kill
    same = r["bit_identical"]
    assert same["steps"] == [DRY_RUN.torchrun_iterations] * 2
    assert same["identical"] and same["first_difference"] is None
    assert same["tensors_compared"] > 100  # weights, three EMAs and both Adam moments
    assert r["sample"]["returncode"] == 0 and r["sample"]["images"] == DRY_RUN.sample_images


def test_spawned_fid_part_against_its_own_statistics_is_zero(fid_spawned):
    part = fid_spawned["parts"]["fid"]
    assert part["status"] == "ok" and "in_process" not in part
    assert part["budget_s"] == DRY_RUN.budgets["fid"]
    r = part["results"]
    assert r["images"]["source"].startswith("uniform random")  # no torchrun run to sample
    assert r["fid_ref"]["returncode"] == 0
    assert r["fid"]["images"] == DRY_RUN.fid_images
    for run in r["fid"]["runs"]:
        assert run["returncode"] == 0 and abs(run["fid"]) < 1e-6
    assert r["detector"]["features"] == DRY_RUN.detector_widths[-1]
    assert r["detector"]["flops_per_image"] > 0


def test_schemes_part_prices_every_scheme_and_the_math_attention_fallback(dry_run):
    r = results(dry_run[0], "schemes")
    names = set(SCHEMES.names()) | {"upwind, math attention", "flow map (upwind)"}
    assert set(r["cost_ratio_to_upwind"]) == names
    assert r["cost_ratio_to_upwind"]["upwind"] == 1.0
    # forward-mode AD through attention: the math backend has the rule (the autodiff scheme's
    # fallback); the CPU's fused flash kernel does not
    assert r["sdpa"]["MATH"]["jvp"] == "ok"
    assert r["sdpa"]["FLASH_ATTENTION"]["forward"] == "ok"
    assert r["sdpa"]["FLASH_ATTENTION"]["jvp"] != "ok"
    # the autodiff and central schemes count more FLOPs than upwind's two evaluations
    flops = {n: c["flops_per_iteration"] for n, c in r["configs"].items()}
    assert flops["central"] > flops["upwind"] and flops["autodiff"] > flops["upwind"]
    assert flops["upwind, math attention"] == flops["upwind"]


def test_throughput_and_compile_parts_time_every_configuration(dry_run):
    record = dry_run[0]
    off = results(record, "official")["configs"]
    assert {"ours fp32", "ours bf16"} <= set(off)
    for c in off.values():
        assert len(c["times_s"]) == DRY_RUN.rounds * DRY_RUN.steps
        assert c["images_per_s"] > 0 and c["flops_per_iteration"] > 0
    assert off["ours fp32"]["flops_per_iteration"] == off["ours bf16"]["flops_per_iteration"]
    comp = results(record, "compile")["bf16"]
    assert set(comp) == {"ours bf16 eager", "ours bf16 compiled"}
    assert results(record, "compile")["bf16 compiled / eager"] > 0


def test_official_code_against_ours(dry_run):
    r = results(dry_run[0], "official")
    if not HAVE_OFFICIAL:
        assert "no official code" in r["official_skipped"]
        pytest.skip(f"no clone of pantheon5100/pid_diffusion at {OFFICIAL}: compared ours only")
    ours, theirs = r["configs"]["ours fp32"], r["configs"]["official fp32"]
    # the same DDPM++: ours keeps EDM's unused augmentation layer (9 x model_channels weights)
    assert ours["parameters"] - theirs["parameters"] == 9 * DRY_RUN.official["num_channels"]
    # the same work per iteration: two student evaluations with backward, one teacher forward
    assert theirs["flops_per_iteration"] == ours["flops_per_iteration"]
    assert r["ratios"]["ours bf16 / official fp32"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --device cuda but no CUDA GPU is visible; use --dry-run for the CPU check"
    ]
    assert not (tmp_path / "out").exists()


def test_a_failing_configuration_is_recorded_and_the_others_are_timed():
    steps = []
    good = Candidate("good", lambda: steps.append(1), 2, lambda: [torch.zeros(4)])
    bad = Candidate("bad", lambda: 1 / 0, 2, list)
    res = alternate(
        [bad, good],
        DRY_RUN,
        torch.device("cpu"),
        Deadline(60),
        PartLog(None),
        "k",
        {"unbuilt": "ValueError: no network"},
    )
    assert res["unbuilt"] == {"error": "ValueError: no network"}
    assert res["bad"]["error"] == "ZeroDivisionError: division by zero"
    timed = DRY_RUN.rounds * DRY_RUN.steps
    assert len(res["good"]["times_s"]) == timed and len(steps) == DRY_RUN.warmup + timed
    assert res["good"]["images_per_s"] > 0 and res["good"]["resident_gib"] == 16 / 2**30


def test_report_renders_what_only_a_gpu_measures(dry_run):
    """The GPU-only fields (peak memory, MFU, the driver) in the report, from the dry run's record."""
    record = json.loads(json.dumps(dry_run[0]))
    record["machine"].update(device_name="NVIDIA H200", driver="580.159.04", capability="9.0")
    bf16 = record["parts"]["official"]["results"]["configs"]["ours bf16"]
    bf16.update(resident_gib=1.5, transient_gib=2.25, peak_gib=3.75)
    bf16.update(achieved_tflops=395.76, peak_spec_tflops=989.4, mfu_spec=0.4)
    from benchmarks.gpu.report import render

    md = render(record)
    assert md.startswith("# GPU check on NVIDIA H200") and "driver 580.159.04" in md
    assert "| 3.75 (1.50 + 2.25) |" in md
    assert "**40.0 %** of 989 TFLOP/s" in md
    assert "- MFU of our bf16 step >= 40 %: 40.0 % (met)" in md
