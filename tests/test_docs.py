"""The documentation's code runs: every ```python block of docs/custom_ode.md, in order."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_custom_ode_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOCS / "custom_ode.md")
    assert len(blocks) >= 4
    namespace: dict = {"__name__": "custom_ode_doc"}
    for block in blocks:
        exec(compile(block, "docs/custom_ode.md", "exec"), namespace)
    assert namespace["err_student"] < 0.1
    assert (tmp_path / "pendulum.png").stat().st_size > 1000


def test_shipped_pendulum_matches_the_page():
    import torch

    import odedistill

    namespace: dict = {"__name__": "custom_ode_doc"}
    exec(compile(python_blocks(DOCS / "custom_ode.md")[0], "doc", "exec"), namespace)
    mine, shipped = namespace["Pendulum"](), odedistill.DampedPendulum()
    x = torch.randn(10, 2)
    t = torch.rand(10)
    assert torch.equal(mine.f(x, t), shipped.f(x, t))
    assert (mine.t_start, mine.t_end, mine.state_shape) == (
        shipped.t_start,
        shipped.t_end,
        shipped.state_shape,
    )


def test_recipe_reference_is_current():
    from odedistill.infra.docs import recipes_markdown

    assert (DOCS / "recipes.md").read_text() == recipes_markdown(), (
        "docs/recipes.md is stale: regenerate it with python -m odedistill.infra.docs > docs/recipes.md"
    )


def test_relative_links_and_pictures_resolve():
    """Every relative link or picture in the README and docs/ names a file of the repository."""
    root = DOCS.parent
    missing = []
    for page in [root / "README.md", *sorted(DOCS.glob("*.md")), root / "benchmarks" / "README.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                missing.append(f"{page.relative_to(root)} -> {target}")
    assert not missing, missing
