"""The package imports only what pyproject.toml declares (core dependencies, or an extra for
imports made inside a function or a try block)."""

from __future__ import annotations

from pathlib import Path

from tests.declared_imports import imports_of, undeclared_imports

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """
[project]
name = "fixture"
version = "0"
dependencies = ["NumPy>=1.24", "typer>=0.29"]

[project.optional-dependencies]
extra = ["scikit-learn>=1.3"]
"""


def _package(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path]:
    pkg = tmp_path / "fixturepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (pkg / name).write_text(text)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    return pkg, pyproject


def test_odedistill_imports_only_declared_distributions():
    problems = undeclared_imports(ROOT / "odedistill", ROOT / "pyproject.toml")
    assert problems == [], "\n".join(problems)


def test_the_scan_sees_the_package_imports():
    modules = {i.module for i in imports_of(ROOT / "odedistill")}
    assert {"torch", "typer", "scipy", "safetensors"} <= modules


def test_an_undeclared_import_is_caught(tmp_path):
    pkg, pyproject = _package(
        tmp_path,
        {
            "good.py": "import os\nimport numpy as np\nfrom typer import Typer\nfrom . import bad\n",
            "bad.py": "import click\n",
        },
    )
    problems = undeclared_imports(pkg, pyproject)
    assert len(problems) == 1
    assert "fixturepkg/bad.py:1" in problems[0] and "'click'" in problems[0]


def test_an_extra_may_serve_only_a_guarded_import(tmp_path):
    pkg, pyproject = _package(
        tmp_path,
        {
            "lazy.py": "def digits():\n    from sklearn.datasets import load_digits\n",
            "tried.py": "try:\n    import sklearn\nexcept ImportError:\n    sklearn = None\n",
        },
    )
    assert undeclared_imports(pkg, pyproject) == []
    (pkg / "eager.py").write_text("import sklearn\n")
    problems = undeclared_imports(pkg, pyproject)
    assert len(problems) == 1 and "only in extra 'extra'" in problems[0]


def test_an_import_in_no_extra_is_caught_even_when_guarded(tmp_path):
    pkg, pyproject = _package(tmp_path, {"lazy.py": "def f():\n    import hypothesis\n"})
    problems = undeclared_imports(pkg, pyproject)
    assert len(problems) == 1 and "neither a dependency nor in an extra" in problems[0]
