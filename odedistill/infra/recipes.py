"""Recipes: TOML validated into a ``Config``, with dotted ``--set`` overrides, and the resolved config as TOML."""

from __future__ import annotations

import difflib
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from odedistill.errors import UserError
from odedistill.fields import MAX_FLOAT, MAX_INT
from odedistill.infra.config import SECTIONS, Config
from odedistill.infra.consistency import check_consistency, show
from odedistill.infra.schema import FieldInfo, kinds_of, section_fields
from odedistill.kinds import SYSTEMS
from odedistill.registry import Registry


def all_fields() -> list[FieldInfo]:
    """Every recipe field, a kinded section's with each registered kind's own fields."""
    return [f for s, cls in SECTIONS.items() for f in section_fields(s, cls)]


def all_keys() -> list[str]:
    """Every valid dotted key, e.g. 'train.iterations' (a key of several kinds once)."""
    return list(dict.fromkeys(f.key for f in all_fields()))


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(options)}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is dict:
        return "a table"
    if origin is list:
        inner = _type_name(typing.get_args(tp)[0]).removeprefix("a ").removeprefix("an ")
        return f"a list of {'booleans' if inner == 'true or false' else inner + 's'}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def _coerce(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    """Check ``value`` against type ``tp`` and the field's choices and range; return it typed."""
    origin = typing.get_origin(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"'{key}' expects a table such as {{a = 1.0}}, got {show(value)}")
        bad = [k for k in value if not (isinstance(k, str) and k.isidentifier())]
        if bad:
            raise UserError(f"'{key}': {show(bad[0])} is not a Python keyword argument name")
        if not _plain(value):
            raise UserError(f"'{key}' may hold numbers, strings, booleans, lists and tables only")
        if len(value) > 64 or len(json.dumps(value)) > 65536:
            raise UserError(f"'{key}' holds at most 64 entries and 64 kB")
        return dict(value)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"'{key}' expects {_type_name(tp)}, got {show(value)}")
        max_len = meta.get("max_len", 16)
        if len(value) > max_len:
            raise UserError(f"'{key}' holds at most {max_len} items, got {len(value)}")
        item = meta.get("item", {})
        return [_coerce(f"{key}[{i}]", v, inner, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError("union fields are not supported")  # pragma: no cover
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise UserError(f"'{key}' expects {_type_name(tp)}, got {show(value)}")
    if tp is float:
        value = float(value) if abs(value) < 1e308 or not isinstance(value, int) else math.inf
        if not math.isfinite(value):
            raise UserError(f"'{key}' must be a finite number, got {value!r}")
    if tp is str and ("\x00" in value or len(value) > 4096):
        raise UserError(f"'{key}' must be a string without NUL characters, up to 4096 long")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise UserError(
            f"'{key}' must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
            + _closest(str(value), [str(c) for c in choices]).replace("valid keys", "choices")
        )
    lo, hi = _range(tp, meta)
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        bound = f"> {lo}" if meta.get("lo_open") else f">= {lo}"
        raise UserError(f"'{key}' must be {bound}, got {show(value)}")
    if hi is not None and value > hi:
        raise UserError(f"'{key}' must be <= {hi}, got {show(value)}")
    return value


def _range(tp: Any, meta: dict[str, Any]) -> tuple[float | None, float | None]:
    """A number field's bounds: its own, else ±MAX_FLOAT for floats and MAX_INT for integers."""
    lo, hi = meta.get("lo"), meta.get("hi")
    if tp is float:
        return (-MAX_FLOAT if lo is None else lo), (MAX_FLOAT if hi is None else hi)
    if tp is int:
        return lo, (MAX_INT if hi is None else hi)
    return lo, hi


def range_text(tp: Any, meta: dict[str, Any]) -> str:
    """The documented range of a number field, e.g. '(0, 10]', or '' for other fields."""
    if tp not in (int, float):
        return ""
    lo, hi = _range(tp, meta)
    left = "(" if meta.get("lo_open") else "["
    return f"{left}{'-inf' if lo is None else f'{lo:g}'}, {hi:g}]"


def check_field(key: str, value: Any) -> Any:
    """``value`` checked as the dotted field ``key`` would be in a recipe (type, choices, range)."""
    f = next(f for f in all_fields() if f.key == key)
    return _coerce(key, value, f.type, f.meta)


def _plain(value: Any, depth: int = 0) -> bool:
    """Only what JSON and TOML both hold: numbers, strings, booleans, lists and tables."""
    if depth > 8:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    return isinstance(value, bool | int | float | str)


def from_dict(raw: dict[str, Any], source: str = "recipe") -> Config:
    """Validate a nested dict (as parsed from TOML) into a ``Config``."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a table of sections")
    sections: dict[str, Any] = {}
    for sname, body in raw.items():
        if sname == "flowmap":
            raise UserError(
                f"{source}: the flow map's fields belong to [student] (student.kind = "
                "'flowmap'): move the keys of [flowmap] under [student]"
            )
        if sname not in SECTIONS:
            raise UserError(
                f"{source}: unknown section '[{sname}]'" + _closest(sname, list(SECTIONS))
            )
        if not isinstance(body, dict):
            raise UserError(f"{source}: '{sname}' must be a [{sname}] table, got {body!r}")
        try:
            sections[sname] = _section(sname, body)
        except UserError as e:
            raise UserError(f"{source}: {e}") from None
    cfg = Config(**sections)
    check_consistency(cfg, source)
    return cfg


def _section(sname: str, body: dict[str, Any]) -> Any:
    """One section's table validated into its dataclass.

    In a kinded section the ``kind`` is read first; its own fields go into the kind's config
    (``options``). A field of another kind of the section is checked as that kind would and
    left out, as a section the run does not use would be.
    """
    cls = SECTIONS[sname]
    everything = section_fields(sname, cls)
    kind = None
    if kinds_of(cls) is not None:
        kind_field = next(f for f in everything if f.name == "kind")
        kind = _coerce(
            f"{sname}.kind", body.get("kind", kind_field.default()), str, kind_field.meta
        )
    fields = section_fields(sname, cls, kind)
    chosen = {f.name: f for f in fields}
    if len(chosen) < len(fields):  # a kind's field repeats one of the section's
        raise TypeError(f"{sname}.kind {kind!r} declares a field that [{sname}] has itself")
    others = {f.name: f for f in reversed(everything)}
    kwargs, options = {}, {}
    for key, value in body.items():
        dotted = f"{sname}.{key}"
        f = chosen.get(key) or others.get(key)
        if f is None:
            raise UserError(f"unknown key '{dotted}'" + _closest(dotted, all_keys()))
        value = _coerce(dotted, value, f.type, f.meta)
        if key in chosen:
            (kwargs if f.kind is None else options)[key] = value
    if kind is not None:
        kwargs["options"] = kinds_of(cls).get(kind).config(**options)
    return cls(**kwargs)


def parse_override(item: str) -> tuple[str, Any]:
    """'train.iterations=100' -> ('train.iterations', 100); values are read as TOML."""
    if "=" not in item:
        raise UserError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    if key not in all_keys():
        raise UserError(f"--set: unknown key '{key}'" + _closest(key, all_keys()))
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word is a string
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each 'section.key=value' set."""
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        key, value = parse_override(item)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})[name] = value
    return raw


BUILTIN_RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped inside the package (``odedistill run NAME``)."""
    return sorted(p.stem for p in BUILTIN_RECIPES.glob("*.toml"))


def resolve_recipe(path: str | Path) -> Path:
    """A recipe path, or the name of a built-in recipe such as 'quickstart'."""
    path = Path(path)
    if not path.is_file() and path.suffix == "" and path.name in builtin_recipes():
        return BUILTIN_RECIPES / f"{path.name}.toml"
    return path


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Parse a TOML recipe into a dict; a missing file or bad syntax is a ``UserError``."""
    path = resolve_recipe(path)
    if not path.is_file():
        raise UserError(
            f"recipe not found: {path} (give the path to a .toml file, or a built-in recipe: "
            f"{', '.join(builtin_recipes())})"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: TOML syntax error: {e}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a UTF-8 text file") from e


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a recipe.

    A 'module:ClassName' system without ``system.path`` gets the recipe's folder (absolute),
    where its module is looked for first. A relative file path (``teacher.path``,
    ``eval.fid_ref``, ``eval.fid_detector``, ``eval.fid_floor_ref``) that names no file from
    the working directory but one beside the recipe becomes that file's absolute path, so a
    built-in recipe finds the files shipped with it.
    """
    raw = apply_overrides(read_recipe(path), overrides or [])
    cfg = from_dict(raw, source=str(path))
    folder = resolve_recipe(path).resolve().parent
    system = cfg.system
    if "imports" in SYSTEMS.get(system.kind).capabilities and not system.options.path:
        system.options.path = str(folder)
    for section, key in _FILE_KEYS:
        obj = getattr(cfg, section)
        if not hasattr(obj, key):  # a field of a kind the section did not choose
            obj = obj.options
        if hasattr(obj, key):
            setattr(obj, key, _beside(getattr(obj, key), folder))
    return cfg


_FILE_KEYS = (
    ("teacher", "path"),
    ("eval", "fid_ref"),
    ("eval", "fid_detector"),
    ("eval", "fid_floor_ref"),
)


def _beside(value: str, folder: Path) -> str:
    """``value`` unchanged, or the absolute path of the file it names beside the recipe."""
    if not value or Path(value).is_absolute() or Path(value).exists():
        return value
    candidate = folder / value
    return str(candidate.resolve()) if candidate.exists() else value


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML text (every field, defaults included)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {fmt(x)}" for k, x in v.items()) + "}"
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)

    lines = []
    for sname, body in cfg.to_dict().items():
        lines.append(f"[{sname}]")
        lines += [f"{k} = {fmt(v)}" for k, v in body.items()]
        lines.append("")
    return "\n".join(lines)


def field_docs() -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, help, kind) for every field: the source of docs/recipes.md.

    ``kind`` names the kind that owns a field of a kinded section ('' for the section's own).
    A field whose choices are a registry lists every registered option with its own help.
    """
    rows = []
    for f in all_fields():
        meta = f.meta
        help_ = meta["help"]
        choices = meta.get("choices")
        if isinstance(choices, Registry):
            help_ = f"{help_}: {choices.describe()}"
        bounds = range_text(f.type, meta)
        if bounds:
            help_ = f"{help_}; range {bounds}"
        rows.append((f.key, _type_name(f.type), repr(f.default()), help_, f.kind or ""))
    return rows
