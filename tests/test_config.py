"""Recipes: validation errors name the key and the fix, exit code 2, nothing written."""

import json

import pytest

from odedistill.errors import UserError
from odedistill.infra.recipes import (
    all_keys,
    apply_overrides,
    from_dict,
    load_config,
    to_toml,
)
from odedistill.kinds import STUDENTS, SYSTEMS, TEACHERS
from tests.conftest import invoke


@pytest.mark.parametrize(
    "body,message",
    [
        (
            "[train]\niteratons = 5\n",
            "unknown key 'train.iteratons'; did you mean 'train.iterations'",
        ),
        ("[trian]\nbatch = 5\n", "unknown section '[trian]'; did you mean 'train'"),
        ('[train]\nbatch = "big"\n', "'train.batch' expects an integer, got 'big'"),
        ("[train]\nbatch = 0\n", "'train.batch' must be >= 1, got 0"),
        ("[scheme]\nkind = 'centrl'\n", "did you mean 'central'"),
        ("[optim]\nlr = -1.0\n", "'optim.lr' must be > 0"),
        ("[train]\nema_rates = [1.5]\n", "'train.ema_rates' expects numbers in (0, 1)"),
        ("[system]\nt_min = 100.0\n", "'system.t_min' must be smaller than 'system.t_max'"),
        ("[train\nbatch = 1\n", "TOML syntax error"),
    ],
)
def test_recipe_errors(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(UserError) as e:
        load_config(path)
    assert message in str(e.value)
    # the command line: exit 2, one line on stderr, no run directory
    out = tmp_path / "run"
    r = invoke("run", str(path), "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()


def test_missing_recipe_file(tmp_path):
    r = invoke("run", str(tmp_path / "nope.toml"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "recipe not found" in r.stderr


def test_overrides_and_types(tiny_recipe):
    cfg = load_config(
        tiny_recipe,
        ["train.iterations=7", "scheme.kind=central", "train.ema_rates=[0.5]", "optim.lr=1"],
    )
    assert cfg.train.iterations == 7 and cfg.scheme.kind == "central"
    assert cfg.train.ema_rates == [0.5] and cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    with pytest.raises(UserError, match="did you mean 'train.batch'"):
        load_config(tiny_recipe, ["train.bach=3"])
    with pytest.raises(UserError, match="key=value"):
        apply_overrides({}, ["train.batch"])


@pytest.mark.parametrize("kind", STUDENTS.names())
def test_resolved_config_round_trips(kind):
    import tomllib

    cfg = from_dict({"train": {"iterations": 5}, "student": {"kind": kind}})
    assert from_dict(cfg.to_dict()) == cfg
    assert from_dict(tomllib.loads(to_toml(cfg))) == cfg
    assert type(cfg.student.options) is STUDENTS.get(kind).config


def test_every_key_is_a_field_of_some_kind():
    """all_keys() is the union of the keys of the configs of every student, system and
    teacher kind."""
    keys = set()
    for section, registry in (("student", STUDENTS), ("system", SYSTEMS), ("teacher", TEACHERS)):
        for kind in registry.names():
            body = {"kind": kind}
            if "needs_path" in registry.get(kind).capabilities:
                body["path"] = "teacher.pkl"
            keys |= {f"{s}.{k}" for s, b in from_dict({section: body}).to_dict().items() for k in b}
    assert sorted(all_keys()) == sorted(keys)
    assert len(all_keys()) == len(keys)


def test_a_kind_owns_its_fields():
    """student.steps belongs to the flow map: its own type and range apply, a PID student
    checks it the same way and leaves it out, and a misspelt kind field names the right one."""
    fm = from_dict({"student": {"kind": "flowmap", "steps": [4]}})
    assert fm.student.options.steps == [4] and fm.to_dict()["student"]["steps"] == [4]
    pid = from_dict({"student": {"kind": "pid", "steps": [4]}})
    assert "steps" not in pid.to_dict()["student"] and pid == from_dict({})
    for kind in ("pid", "flowmap"):
        with pytest.raises(UserError, match=r"'student.steps\[0\]' must be >= 2, got 1"):
            from_dict({"student": {"kind": kind, "steps": [1]}})
    with pytest.raises(
        UserError, match="unknown key 'student.stepz'; did you mean 'student.steps'"
    ):
        from_dict({"student": {"kind": "flowmap", "stepz": [4]}})
    with pytest.raises(UserError, match="'student.kind' must be one of 'pid', 'flowmap'"):
        from_dict({"student": {"kind": "flowmapp"}})
    with pytest.raises(UserError, match=r"move the keys of \[flowmap\] under \[student\]"):
        from_dict({"student": {"kind": "flowmap"}, "flowmap": {"steps": [4]}})


def test_a_saved_config_of_the_older_layout_still_resumes():
    """A run directory's config.json with the flow map's options as their own [flowmap]."""
    from odedistill.infra.rundir import upgrade_saved

    new = from_dict({"student": {"kind": "flowmap", "steps": [2, 4]}}).to_dict()
    old = {**new, "student": dict(new["student"])}
    old["flowmap"] = {
        k: old["student"].pop(k) for k in ("p_T", "steps", "sources", "source_state", "skip")
    }
    assert upgrade_saved(old) == new


def test_dry_run_prints_and_writes_nothing(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    r = invoke("run", str(tiny_recipe), "--out", str(out), "--dry-run", "--set", "train.batch=9")
    assert r.returncode == 0, r.stderr
    assert "batch = 9" in r.stdout and "[scheme]" in r.stdout
    assert not out.exists()


def test_recipes_in_the_repository_validate():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.toml"))
    assert recipes
    for path in recipes:
        cfg = load_config(path)
        assert json.loads(json.dumps(cfg.to_dict()))
