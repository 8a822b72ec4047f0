"""Which third-party modules a package imports that its pyproject.toml does not declare.

A module imported at module level, outside any ``try`` and any function, runs whenever the
package is imported: its distribution must be a core dependency. An import inside a function
or a ``try`` block may instead come from an optional extra. Modules map to distributions
through ``importlib.metadata.packages_distributions()``; a module that is not installed maps
to the distribution of the same name (``lpips``, ``piq``, ``diffusers``).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    m = _NAME.match(spec)
    if not m:
        raise ValueError(f"cannot read a distribution name from requirement {spec!r}")
    return normalise(m.group(1))


@dataclass(frozen=True)
class Declared:
    core: frozenset[str]
    extras: dict[str, frozenset[str]]

    @property
    def anywhere(self) -> frozenset[str]:
        return self.core.union(*self.extras.values())


def read_declared(pyproject: Path) -> Declared:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    core = frozenset(requirement_name(s) for s in project.get("dependencies", []))
    extras = {
        extra: frozenset(requirement_name(s) for s in specs)
        for extra, specs in project.get("optional-dependencies", {}).items()
    }
    return Declared(core, extras)


@dataclass(frozen=True)
class Import:
    module: str  # the top-level module name
    file: Path
    line: int
    guarded: bool  # inside a function or a try block


class _Collector(ast.NodeVisitor):
    def __init__(self, file: Path) -> None:
        self.file = file
        self.depth = 0  # functions and try blocks around the current node
        self.found: list[Import] = []

    def _guarded(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _guarded
    visit_Try = _guarded
    if sys.version_info >= (3, 11):
        visit_TryStar = _guarded

    def _add(self, name: str, node: ast.AST) -> None:
        top = name.split(".")[0]
        self.found.append(Import(top, self.file, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node)


def imports_of(package_dir: Path) -> list[Import]:
    found: list[Import] = []
    for file in sorted(package_dir.rglob("*.py")):
        collector = _Collector(file)
        collector.visit(ast.parse(file.read_text(encoding="utf-8"), filename=str(file)))
        found += collector.found
    return found


@cache
def _module_distributions() -> dict[str, list[str]]:
    return packages_distributions()


def distributions_of(module: str) -> set[str]:
    dists = _module_distributions().get(module)
    return {normalise(d) for d in dists} if dists else {normalise(module)}


def undeclared_imports(package_dir: Path, pyproject: Path) -> list[str]:
    """One line per import of a third-party module that pyproject.toml does not declare."""
    declared = read_declared(pyproject)
    own = package_dir.name
    problems = []
    for imp in imports_of(package_dir):
        if imp.module in sys.stdlib_module_names or imp.module in (own, "__future__"):
            continue
        dists = distributions_of(imp.module)
        where = f"{imp.file.relative_to(package_dir.parent)}:{imp.line}"
        if imp.guarded:
            if not dists & declared.anywhere:
                problems.append(
                    f"{where}: imports {imp.module!r} (distribution {', '.join(sorted(dists))}), "
                    "which is neither a dependency nor in an extra"
                )
        elif not dists & declared.core:
            extra = [e for e, names in declared.extras.items() if dists & names]
            why = f"only in extra {extra[0]!r}" if extra else "not declared"
            problems.append(
                f"{where}: imports {imp.module!r} at module level (distribution "
                f"{', '.join(sorted(dists))}), {why}; declare it in dependencies or import it "
                "where the extra is needed"
            )
    return problems
