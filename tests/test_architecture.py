"""The package's shape: import-linter's layer contract holds and covers every module, no module
outgrows 400 lines, and no import hides inside a function to dodge a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "odedistill"

#: kept 1:1 with EDM's own layout so that it can be compared line by line
LONG_MODULES_ALLOWED = {"teachers/networks.py"}


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return contract["layers"]


def test_lint_imports_passes():
    code = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    r = subprocess.run(
        [sys.executable, "-c", code, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "odedistill layers KEPT" in r.stdout


def test_every_top_level_module_is_in_a_layer():
    named = {
        name.strip()
        for layer in _layers()
        for name in layer.replace("|", ":").split(":")
        if name.strip()
    }
    top = {
        f"odedistill.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py")
        or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert top - named == set(), "put these modules in a layer of pyproject.toml"
    assert named - top == set(), "these layers name modules that do not exist"


def test_no_module_over_400_lines():
    long = {
        p.relative_to(PACKAGE).as_posix(): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert set(long) <= LONG_MODULES_ALLOWED, long


def _function_level_imports(path: Path) -> list[str]:
    """odedistill imports inside function bodies (TYPE_CHECKING blocks are not imports)."""
    found = []

    class Visitor(ast.NodeVisitor):
        depth = 0

        def visit_FunctionDef(self, node: ast.AST) -> None:
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if self.depth and (node.module or "").startswith("odedistill"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                if self.depth and alias.name.startswith("odedistill"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}")

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_no_function_level_imports_of_the_package_outside_the_cli():
    """Command modules import their work lazily, so that ``--help`` and ``--version`` start
    fast; everywhere else an import inside a function would only hide a circle."""
    found = [
        line
        for p in PACKAGE.rglob("*.py")
        if "cli" not in p.relative_to(PACKAGE).parts
        for line in _function_level_imports(p)
    ]
    assert found == []


#: the maths layer: plain torch (and scipy's ODE solver for reference solutions)
MATHS = ["systems", "models", "schemes", "grids.py", "distances.py", "loss.py", "solvers.py",
         "schedules.py", "parametrisation.py"]  # fmt: skip
#: of scipy, the maths may import only its ODE integrators (solve_ivp, the reference solver)
MATHS_SCIPY = ("scipy.integrate",)


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement of ``path`` names, at any depth (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_the_maths_uses_no_distributed_torch_and_of_scipy_only_its_ode_solver():
    files = [
        p
        for name in MATHS
        for p in ([PACKAGE / name] if name.endswith(".py") else (PACKAGE / name).rglob("*.py"))
    ]
    bad = []
    for p in files:
        for line, module in _imported_modules(p):
            scipy_part = module.split(".")[0] == "scipy" and not module.startswith(MATHS_SCIPY)
            if module.startswith("torch.distributed") or scipy_part:
                bad.append(f"{p.relative_to(ROOT)}:{line} {module}")
    assert bad == []
    assert any(m == "scipy.integrate" for p in files for _, m in _imported_modules(p))


def test_importing_the_maths_loads_no_scipy_matplotlib_or_rich():
    modules = [f"odedistill.{n.removesuffix('.py')}" for n in MATHS]
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted({k.split('.')[0] for k in sys.modules} & {'scipy', 'matplotlib', 'rich'}))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
