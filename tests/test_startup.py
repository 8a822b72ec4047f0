"""`import odedistill` and the command line's --version and --help stay light: no torch, scipy or
matplotlib until a command needs them (the public names load on first use)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import odedistill
from benchmarks import startup
from odedistill.cli import fid as cli_fid
from odedistill.evaluation.fid import DETECTOR_FILE

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "matplotlib", "numpy")

PROBE = """
import sys
import odedistill
from odedistill.cli import main
print(odedistill.__version__)
for argv in (["--version"], ["--help"], ["sample", "--help"], ["fid", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None), (argv, e.code)
print("LOADED", sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
"""


def test_version_and_help_import_no_heavy_module():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *HEAVY], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert odedistill.__version__ in out.stdout
    assert "Usage" in out.stdout and "--detector" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"


def test_every_public_name_resolves_to_its_module():
    assert set(odedistill.__all__) == {*odedistill._EXPORTS, "__version__"}
    for name in odedistill.__all__:
        value = getattr(odedistill, name)
        assert name in dir(odedistill)
        if hasattr(value, "__module__") and name != "__version__":
            assert value.__module__.startswith("odedistill."), name
    assert odedistill.distill is odedistill.api.distill
    assert odedistill.SCHEMES is sys.modules["odedistill.schemes"].SCHEMES
    # an export renamed in _EXPORTS ('module:name') is that module's own object
    assert odedistill.config_from_dict is sys.modules["odedistill.infra.recipes"].from_dict
    assert odedistill.generate_samples is sys.modules["odedistill.infra.seeds"].generate


def test_unknown_name_is_an_attribute_error():
    try:
        odedistill.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("odedistill.no_such_name resolved")


def test_fid_help_names_the_detector_file():
    assert DETECTOR_FILE in cli_fid._DETECTOR_HELP


def test_startup_benchmark_quick(tmp_path):
    startup.main(["--quick", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    for label, _ in startup.COMMANDS[: startup.QUICK_COMMANDS]:
        assert f"`{label}`" in report
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows[0]["wall_ratio"] == 1.0 and all(r["wall_s"] > 0 for r in rows)
