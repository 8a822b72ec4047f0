"""Generate docs/recipes.md from the config dataclasses: ``python -m odedistill.infra.docs``."""

from __future__ import annotations

from odedistill.infra.recipes import builtin_recipes, field_docs
from odedistill.infra.rundir import RESUMABLE_CHANGES

HEADER = """# Recipe reference

A recipe is a TOML file with the sections below; every field is optional and falls back to
the default shown. Recipes are validated into typed config objects before anything is
written: an unknown key is an error that names the closest valid key, a wrong type or range
names the key and what it expects, every number must be finite, and every integer has an
upper bound (2^31 - 1 unless the table gives a tighter one). Any field can be overridden on the command line with
`--set section.key=value` (values are read as TOML: `--set train.ema_rates=[0.999,0.9999]`,
`--set scheme.kind=central`). `odedistill run RECIPE --dry-run` prints the resolved config
and writes nothing; the resolved config is saved as `config.json` and `config.toml` in the
run directory.

A section with a registry of kinds (`[student]`) holds its own fields and those of the kind it
chooses, listed under `### student.kind = '...'`; a field of another kind of that section is
checked as that kind would check it and then ignored, like a section the run does not use.

Built-in recipes (run them by name, e.g. `odedistill run {first}`): {names}. The
repository's `recipes/` folder holds them and the GPU recipes.

This page is generated from the code by `python -m odedistill.infra.docs > docs/recipes.md`.
"""


def recipes_markdown() -> str:
    names = builtin_recipes()
    lines = [HEADER.format(first="quickstart", names=", ".join(f"`{n}`" for n in names))]
    table = None
    for key, typ, default, help_, kind in field_docs():
        sec = key.split(".")[0]
        if (sec, kind) != table:
            if kind:
                lines += ["", f"### {sec}.kind = '{kind}'", "", "Fields of its own:", ""]
            else:
                lines += ["", f"## [{sec}]", ""]
            lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
            table = (sec, kind)
        lines.append(f"| `{key}` | {typ} | `{default}` | {help_.replace('|', '/')} |")
    lines += [
        "",
        "## Changing a run on --resume",
        "",
        "`odedistill run RECIPE --resume` continues the run in the run directory from its newest",
        "checkpoint. The recipe must be the one the run started with, except for these fields;",
        "the ODE, its teacher, the grid, the scheme, the distance, the network, the optimiser's",
        "name and moments, the batch and the seed may not change:",
        "",
        "| field | why it may change |",
        "|---|---|",
    ]
    lines += [f"| `{key}` | {why} |" for key, why in RESUMABLE_CHANGES.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(recipes_markdown(), end="")
