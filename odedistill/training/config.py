"""Recipes: TOML validated into typed config objects, with dotted ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from odedistill.errors import UserError


def _f(
    default: Any,
    help: str,
    choices: tuple | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> Any:
    """A config field with its one-line help, allowed choices and range."""
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    name: str = _f("run", "name of the run (the default run directory is runs/<name>)")
    seed: int = _f(0, "seed for initialisation and for the noise stream", lo=0)
    device: str = _f("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:K'")
    threads: int = _f(
        0, "CPU threads for torch (0 = torch's default; 1 is fastest on a busy machine)", lo=0
    )


@dataclass
class SystemConfig:
    kind: str = _f(
        "probability_flow",
        "the ODE: 'probability_flow' (of the teacher), 'linear' or 'pendulum'",
        choices=("probability_flow", "linear", "pendulum"),
    )
    t_max: float = _f(
        80.0, "T, where the probability-flow ODE starts (z ~ N(0, T^2 I))", lo=0, lo_open=True
    )
    t_min: float = _f(
        0.002, "epsilon, where it ends and one-step samples are read", lo=0, lo_open=True
    )
    sigma_data: float = _f(
        0.5, "sigma_data of the preconditioning (student c_in)", lo=0, lo_open=True
    )


@dataclass
class TeacherConfig:
    kind: str = _f(
        "gaussian_mixture",
        "'gaussian_mixture' (exact), 'edm' (a checkpoint) or 'edm_random' (an untrained EDM "
        "network of architecture teacher.arch: a stand-in for tests and benchmarks)",
        choices=("gaussian_mixture", "edm", "edm_random"),
    )
    preset: str = _f(
        "ring",
        "mixture means: 'ring' (2-D), 'grid' (2-D) or 'digits' (1x8x8)",
        choices=("ring", "grid", "digits"),
    )
    modes: int = _f(8, "ring: number of modes; grid: modes per side", lo=1)
    radius: float = _f(1.0, "ring radius, or grid spacing", lo=0, lo_open=True)
    std: float = _f(0.05, "standard deviation of every mixture component", lo=0)
    count: int = _f(0, "digits: how many images become means (0 = all 1797)", lo=0)
    path: str = _f("", "edm: path to a released .pkl or a converted .safetensors")
    arch: str = _f(
        "ddpmpp",
        "edm_random: EDM's configuration 'ddpmpp' (CIFAR-10 VP), 'ncsnpp' (CIFAR-10 VE) or "
        "'adm' (ImageNet-64)",
        choices=("ddpmpp", "ncsnpp", "adm"),
    )
    img_resolution: int = _f(
        0,
        "edm_random: image size (0 = the configuration's: 32, or 64 for adm); attention "
        "stays at the same fractions of it",
        lo=0,
    )
    label_dim: int = _f(
        -1, "edm_random: classes (-1 = the configuration's: 0, or 1000 for adm)", lo=-1
    )
    model_channels: int = _f(
        0, "edm_random: base channels (0 = the configuration's: 128, or 192 for adm)", lo=0
    )
    channel_mult: list[int] = _f(
        [], "edm_random: channel multiplier per resolution ([] = the configuration's)"
    )
    num_blocks: int = _f(
        0, "edm_random: residual blocks per resolution (0 = the configuration's: 4, or 3)", lo=0
    )


@dataclass
class StudentConfig:
    net: str = _f(
        "mlp",
        "the network F: 'mlp' (vectors), 'unet' (small images) or 'teacher' (the EDM teacher's)",
        choices=("mlp", "unet", "teacher"),
    )
    init: str = _f(
        "random",
        "'random' or 'teacher' (a copy of the teacher's raw network)",
        choices=("random", "teacher"),
    )
    dropout: float = _f(
        0.0, "teacher architecture: dropout rate of the student (PID: 0)", lo=0, hi=1
    )
    width: int = _f(256, "mlp: hidden width", lo=1)
    depth: int = _f(4, "mlp: residual blocks", lo=1)
    channels: int = _f(32, "unet: base channels", lo=1)
    channel_mult: list[int] = _f([1, 2], "unet: channel multiplier per resolution")
    blocks: int = _f(1, "unet: residual blocks per resolution", lo=1)
    attention: bool = _f(True, "unet: self-attention at the lowest resolution")


@dataclass
class SchemeConfig:
    kind: str = _f(
        "upwind",
        "residual scheme: 'upwind' (PID), 'central' or 'autodiff'",
        choices=("upwind", "central", "autodiff"),
    )
    N: int = _f(250, "number of collocation points (t_0 = T ... t_{N-1} = epsilon)", lo=3)
    grid: str = _f(
        "karras", "collocation grid: 'karras' or 'uniform'", choices=("karras", "uniform")
    )
    rho: float = _f(7.0, "Karras grid exponent", lo=0, lo_open=True)
    fused: bool = _f(True, "run a sample's student evaluations as one batched pass")


@dataclass
class LossConfig:
    distance: str = _f(
        "l2",
        "'l2' (mean squared), 'pseudo_huber' or 'lpips'",
        choices=("l2", "pseudo_huber", "lpips"),
    )
    huber_c: float = _f(0.0, "pseudo-Huber c; 0 means 0.00054 sqrt(dim)", lo=0)


@dataclass
class OptimConfig:
    name: str = _f("radam", "'radam' (PID) or 'adam'", choices=("radam", "adam"))
    lr: float = _f(2e-4, "learning rate (constant)", lo=0, lo_open=True)
    betas: list[float] = _f([0.9, 0.999], "Adam betas")
    eps: float = _f(1e-8, "Adam epsilon", lo=0, lo_open=True)
    weight_decay: float = _f(0.0, "weight decay", lo=0)
    grad_clip: float = _f(0.0, "clip the gradient norm to this (0 = off)", lo=0)


@dataclass
class TrainConfig:
    batch: int = _f(256, "samples per iteration, over all processes (the global batch)", lo=1)
    micro_batch: int = _f(
        0,
        "samples per forward/backward pass on one process; gradients accumulate over the "
        "process's share of the batch (0 = the whole share in one pass)",
        lo=0,
    )
    iterations: int = _f(1000, "optimiser steps", lo=1)
    ema_rates: list[float] = _f([0.999], "EMA decay rates kept beside the weights")
    log_every: int = _f(50, "iterations between lines of metrics.jsonl", lo=1)
    checkpoint_every: int = _f(1000, "iterations between checkpoints (and one at the end)", lo=1)
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep", lo=1)
    sample_every: int = _f(
        0,
        "iterations between sample grids from fixed seeds, samples/step-XXXXXXXX.png (0 = off)",
        lo=0,
    )
    precision: str = _f(
        "fp32",
        "'fp32', 'bf16' or 'fp16': autocast of the networks with fp32 master weights "
        "(fp16 adds loss scaling); the residual arithmetic stays fp32",
        choices=("fp32", "bf16", "fp16"),
    )
    tf32: bool = _f(False, "CUDA: allow TF32 tensor cores for fp32 matmuls and convolutions")
    channels_last: bool = _f(False, "image networks: channels-last (NHWC) memory layout")
    compile: bool = _f(False, "torch.compile the student and teacher networks")
    checkpoint_activations: bool = _f(
        False, "recompute the student's activations in the backward pass (saves memory)"
    )


@dataclass
class EvalConfig:
    enabled: bool = _f(True, "evaluate after training: eval.json and samples.png")
    n_heldout: int = _f(1000, "held-out initial states for trajectory errors", lo=1)
    seed: int = _f(12345, "seed of the held-out states and fresh data", lo=0)
    nfe: list[int] = _f([1, 2, 4, 8], "evaluation budgets of the Euler and Heun baselines")
    ema: float = _f(-1.0, "EMA rate whose weights are 'student' (-1 = the first rate, 0 = raw)")
    trajectories: int = _f(8, "student trajectories drawn in samples.png", lo=0)
    grid_size: int = _f(8, "images: rows and columns of the sample grids", lo=1)
    fid_every: int = _f(
        0,
        "FID of the checkpoint every K iterations (0 = off; a multiple of checkpoint_every)",
        lo=0,
    )
    fid_ref: str = _f("", "FID during training: reference statistics .npz (mu, sigma)")
    fid_detector: str = _f("", "FID during training: the TorchScript Inception detector file")
    fid_num: int = _f(10000, "FID during training: images from seeds 0 .. fid_num - 1", lo=2)
    fid_weights: str = _f("all", "FID during training: 'all', 'ema', 'raw' or a rate")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)
}


def all_keys() -> list[str]:
    """Every valid dotted key, e.g. 'train.iterations'."""
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(options)}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        inner = _type_name(typing.get_args(tp)[0]).removeprefix("a ").removeprefix("an ")
        return f"a list of {'booleans' if inner == 'true or false' else inner + 's'}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def _coerce(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    """Check ``value`` against type ``tp`` and the field's choices and range; return it typed."""
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"'{key}' expects {_type_name(tp)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, inner, {}) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError("union fields are not supported")  # pragma: no cover
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise UserError(f"'{key}' expects {_type_name(tp)}, got {value!r}")
    value = float(value) if tp is float else value
    choices = meta.get("choices")
    if choices and value not in choices:
        raise UserError(
            f"'{key}' must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
            + _closest(str(value), [str(c) for c in choices]).replace("valid keys", "choices")
        )
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        bound = f"> {lo}" if meta.get("lo_open") else f">= {lo}"
        raise UserError(f"'{key}' must be {bound}, got {value!r}")
    if hi is not None and value > hi:
        raise UserError(f"'{key}' must be <= {hi}, got {value!r}")
    return value


def from_dict(raw: dict[str, Any], source: str = "recipe") -> Config:
    """Validate a nested dict (as parsed from TOML) into a ``Config``."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a table of sections")
    sections: dict[str, Any] = {}
    for sname, body in raw.items():
        if sname not in SECTIONS:
            raise UserError(
                f"{source}: unknown section '[{sname}]'" + _closest(sname, list(SECTIONS))
            )
        if not isinstance(body, dict):
            raise UserError(f"{source}: '{sname}' must be a [{sname}] table, got {body!r}")
        cls = SECTIONS[sname]
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in body.items():
            dotted = f"{sname}.{key}"
            if key not in fields:
                raise UserError(f"{source}: unknown key '{dotted}'" + _closest(dotted, all_keys()))
            try:
                kwargs[key] = _coerce(dotted, value, hints[key], dict(fields[key].metadata))
            except UserError as e:
                raise UserError(f"{source}: {e}") from None
        sections[sname] = cls(**kwargs)
    cfg = Config(**sections)
    _check_consistency(cfg, source)
    return cfg


def _check_consistency(cfg: Config, source: str) -> None:
    e = cfg.eval
    if e.fid_every:
        if not (e.fid_ref and e.fid_detector):
            raise UserError(
                f"{source}: 'eval.fid_every' needs 'eval.fid_ref' and 'eval.fid_detector' "
                "(see docs/evaluation.md)"
            )
        if e.fid_every % cfg.train.checkpoint_every:
            raise UserError(
                f"{source}: 'eval.fid_every' must be a multiple of 'train.checkpoint_every' "
                f"({cfg.train.checkpoint_every}), since FID is computed from a checkpoint"
            )
    if cfg.system.t_min >= cfg.system.t_max:
        raise UserError(f"{source}: 'system.t_min' must be smaller than 'system.t_max'")
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise UserError(f"{source}: 'optim.betas' expects two numbers in [0, 1)")
    if not all(0 < r < 1 for r in cfg.train.ema_rates):
        raise UserError(f"{source}: 'train.ema_rates' expects numbers in (0, 1)")
    if not all(n >= 1 for n in cfg.eval.nfe):
        raise UserError(f"{source}: 'eval.nfe' expects positive integers")
    if cfg.eval.ema not in (-1.0, 0.0) and cfg.eval.ema not in cfg.train.ema_rates:
        raise UserError(
            f"{source}: 'eval.ema' = {cfg.eval.ema} is not one of 'train.ema_rates' "
            f"{cfg.train.ema_rates}; use -1 for the first rate or 0 for the raw weights"
        )
    if cfg.train.micro_batch > cfg.train.batch:
        raise UserError(
            f"{source}: 'train.micro_batch' = {cfg.train.micro_batch} exceeds 'train.batch' = "
            f"{cfg.train.batch}; use 0 for one pass"
        )
    if not all(m >= 1 for m in cfg.teacher.channel_mult):
        raise UserError(f"{source}: 'teacher.channel_mult' expects positive integers")
    if cfg.teacher.kind == "edm" and not cfg.teacher.path:
        raise UserError(f"{source}: 'teacher.path' is required when teacher.kind = 'edm'")


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
    """Read, override and validate a recipe."""
    raw = apply_overrides(read_recipe(path), overrides or [])
    return from_dict(raw, source=str(path))


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML text (every field, defaults included)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    lines = []
    for sname, body in cfg.to_dict().items():
        lines.append(f"[{sname}]")
        lines += [f"{k} = {fmt(v)}" for k, v in body.items()]
        lines.append("")
    return "\n".join(lines)


def field_docs() -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every field: the source of docs/recipes.md."""
    rows = []
    for sname, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            rows.append(
                (f"{sname}.{f.name}", _type_name(hints[f.name]), repr(default), f.metadata["help"])
            )
    return rows
