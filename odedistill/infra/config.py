"""Recipe sections as typed config objects: every knob with its default, help, choices and range.

Choices that name an implementation (the scheme, the grid, the distance, the system, the
teacher, the student network) are registries: a registered option is valid in a recipe at
once. Validation, ``--set`` overrides and reading TOML are in :mod:`odedistill.infra.recipes`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from odedistill.distances import DISTANCES
from odedistill.fields import _f
from odedistill.grids import GRIDS
from odedistill.infra.config_eval import EvalConfig
from odedistill.infra.precision import AUTOCAST_DTYPES
from odedistill.infra.registries import NETWORKS
from odedistill.infra.schema import OPTIONS, KindedSection, flat
from odedistill.kinds import STUDENTS, SYSTEMS, TEACHERS
from odedistill.registry import Registry
from odedistill.schemes import SCHEMES


@dataclass
class RunConfig:
    name: str = _f(
        "run",
        "name of the run, the default run directory runs/<name>: letters, digits, '.', '_', '-'",
    )
    seed: int = _f(0, "seed for initialisation and for the noise stream", lo=0, hi=2**32 - 1)
    device: str = _f("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:K'")
    threads: int = _f(
        0,
        "CPU threads for torch (0 = torch's default; 1 is fastest on a busy machine)",
        lo=0,
        hi=1024,
    )


@dataclass
class SystemConfig(KindedSection):
    KINDS: ClassVar[Registry] = SYSTEMS

    kind: str = _f(
        "probability_flow", "the ODE (its own fields are listed under it below)", choices=SYSTEMS
    )
    options: Any = field(default=None, metadata=OPTIONS)


@dataclass
class TeacherConfig(KindedSection):
    KINDS: ClassVar[Registry] = TEACHERS

    kind: str = _f(
        "gaussian_mixture",
        "the teacher of the ODE (its own fields are listed under it below)",
        choices=TEACHERS,
    )
    options: Any = field(default=None, metadata=OPTIONS)


@dataclass
class StudentConfig(KindedSection):
    KINDS: ClassVar[Registry] = STUDENTS

    kind: str = _f(
        "pid", "the student (its own fields are listed under it below)", choices=STUDENTS
    )
    net: str = _f("mlp", "the network F", choices=NETWORKS)
    init: str = _f(
        "random",
        "'random' or 'teacher' (a copy of the teacher's raw network, with the teacher's input "
        "scale and time input)",
        choices=("random", "teacher"),
    )
    dropout: float = _f(
        0.0, "teacher architecture: dropout rate of the student (PID: 0)", lo=0, hi=1
    )
    width: int = _f(256, "mlp: hidden width", lo=1, hi=65536)
    depth: int = _f(4, "mlp: residual blocks", lo=1, hi=1000)
    channels: int = _f(32, "unet: base channels", lo=1, hi=4096)
    channel_mult: list[int] = _f(
        [1, 2], "unet: channel multiplier per resolution", item=dict(lo=1, hi=64), max_len=8
    )
    blocks: int = _f(1, "unet: residual blocks per resolution", lo=1, hi=64)
    attention: bool = _f(True, "unet: self-attention at the lowest resolution")
    normalise: bool = _f(
        False,
        "mlp: standardise the state and condition inputs by their per-dimension mean and std "
        "(4096 draws of the system's own samplers, fixed seed)",
    )
    normalise_output: bool = _f(
        False, "mlp: the output is mean + std * the network's, with the states' mean and std"
    )
    x_fourier: int = _f(
        0,
        "mlp: sinusoidal features of the state input, sin and cos of m fixed directions with "
        "frequencies log-spaced from 1 to student.x_fourier_max (0 = the state as is): lets "
        "the map change sharply with the state",
        lo=0,
        hi=4096,
    )
    x_fourier_max: float = _f(
        16.0, "mlp: the largest frequency of student.x_fourier (rad per unit input)", lo=1, hi=1e4
    )
    time: str = _f(
        "raw",
        "mlp: time input 'raw' (c_noise(t) of the system's parametrisation, Fourier "
        "frequencies 1..64) or 'unit' (tau = (t - t_start)/(t_end - t_start), frequencies 1..16)",
        choices=("raw", "unit"),
    )
    options: Any = field(default=None, metadata=OPTIONS)


@dataclass
class SchemeConfig:
    kind: str = _f("upwind", "residual scheme", choices=SCHEMES)
    N: int = _f(
        250, "number of collocation points (t_0 = T ... t_{N-1} = epsilon)", lo=3, hi=100_000
    )
    grid: str = _f("karras", "collocation grid", choices=GRIDS)
    rho: float = _f(7.0, "Karras grid exponent", lo=0, lo_open=True, hi=100)
    fused: bool = _f(True, "run a sample's student evaluations as one batched pass")
    times: str = _f(
        "grid",
        "collocation times: 'grid' (t_i, i ~ U{0 ... N-1}: PID) or 'continuous' (uniform along "
        "the grid's piecewise-linear interpolation; scheme.kind = 'autodiff' only)",
        choices=("grid", "continuous"),
    )


@dataclass
class LossConfig:
    distance: str = _f("l2", "distance in the system's target space", choices=DISTANCES)
    huber_c: float = _f(0.0, "pseudo-Huber c; 0 means 0.00054 sqrt(dim)", lo=0, hi=1e3)
    causal_eps: float = _f(
        0.0,
        "causal weighting (Wang, Sankaran & Perdikaris 2022): index i's loss is weighted by "
        "exp(-(eps/N) sum_{k<i} R_k), R_k the running loss at index k over the residual scale "
        "of the system; 0 = off (PID student only)",
        lo=0,
        hi=1e6,
    )
    target_grad: str = _f(
        "stop",
        "the gradient of the residual's target f(x(t), t): 'stop' (PID's sg[f], for a large "
        "teacher) or 'through' (the full gradient of |dx/dt - f(x, t)|^2, for a cheap ODE; "
        "continuous times need it to train well)",
        choices=("stop", "through"),
    )
    solved: int = _f(
        0,
        "a general ODE's initial states solved once by the reference solver whose trajectories "
        "the student also fits (endpoint and one random time per sample; the solve counts as "
        "training time); 0 = off, the residual alone (a network teacher: always 0)",
        lo=0,
        hi=10_000_000,
    )
    solved_weight: float = _f(
        1.0,
        "weight of the solved states' misfit (relative to the state's size, in units of the "
        "residual's scale) against the residual loss",
        lo=0,
        hi=1e6,
    )
    residual_fraction: float = _f(
        1.0,
        "with loss.solved: the share of each batch whose residual is also computed (scaled up "
        "by its inverse); 0 = the solved states alone, no residual",
        lo=0,
        hi=1,
    )


@dataclass
class OptimConfig:
    name: str = _f("radam", "'radam' (PID) or 'adam'", choices=("radam", "adam"))
    lr: float = _f(2e-4, "learning rate (peak of the schedule)", lo=0, lo_open=True, hi=10)
    schedule: str = _f(
        "constant",
        "learning-rate schedule after warm-up: 'constant' (PID), 'cosine' or 'linear' (decay to "
        "0 at the last iteration, from optim.decay_start on)",
        choices=("constant", "cosine", "linear"),
    )
    decay_start: float = _f(
        0.0,
        "fraction of the iterations after warm-up before a cosine or linear decay begins",
        lo=0,
        hi=1,
        lo_open=False,
    )
    warmup: int = _f(0, "iterations of linear learning-rate warm-up from 0 (0 = none)", lo=0)
    betas: list[float] = _f([0.9, 0.999], "Adam betas", max_len=2)
    eps: float = _f(1e-8, "Adam epsilon", lo=0, lo_open=True, hi=1)
    weight_decay: float = _f(0.0, "weight decay", lo=0, hi=10)
    grad_clip: float = _f(0.0, "clip the gradient norm to this (0 = off)", lo=0)
    foreach: bool = _f(False, "multi-tensor optimiser kernels (faster for small networks on a CPU)")


@dataclass
class TrainConfig:
    batch: int = _f(
        256, "samples per iteration, over all processes (the global batch)", lo=1, hi=2**20
    )
    micro_batch: int = _f(
        0,
        "samples per forward/backward pass on one process; gradients accumulate over the "
        "process's share of the batch (0 = the whole share in one pass)",
        lo=0,
        hi=2**20,
    )
    iterations: int = _f(1000, "optimiser steps", lo=1, hi=10**9)
    ema_rates: list[float] = _f([0.999], "EMA decay rates kept beside the weights", max_len=8)
    log_every: int = _f(50, "iterations between lines of metrics.jsonl", lo=1)
    checkpoint_every: int = _f(1000, "iterations between checkpoints (and one at the end)", lo=1)
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep", lo=1, hi=1000)
    sample_every: int = _f(
        0,
        "iterations between sample grids from fixed seeds, samples/step-XXXXXXXX.png (0 = off)",
        lo=0,
    )
    precision: str = _f(
        "fp32",
        "'fp32', 'bf16' or 'fp16': autocast of the networks with fp32 master weights "
        "(fp16 adds loss scaling); the residual arithmetic stays fp32",
        choices=tuple(AUTOCAST_DTYPES),
    )
    tf32: bool = _f(False, "CUDA: allow TF32 tensor cores for fp32 matmuls and convolutions")
    channels_last: bool = _f(False, "image networks: channels-last (NHWC) memory layout")
    compile: bool = _f(False, "torch.compile the student and teacher networks")
    checkpoint_activations: bool = _f(
        False, "recompute the student's activations in the backward pass (saves memory)"
    )
    max_seconds: float = _f(
        0.0,
        "stop after this many seconds of training steps (validation, logging and checkpoints "
        "not counted; 0 = no limit); a schedule then decays over whichever of iterations and "
        "seconds runs out first",
        lo=0,
        hi=1e7,
    )
    clock: str = _f(
        "wall",
        "what train.max_seconds counts: 'wall' seconds or 'process' CPU seconds",
        choices=("wall", "process"),
    )
    validate_every: int = _f(
        0,
        "iterations between validation checks (0 = off): the student's norm-relative error "
        "(val_error, with its median and p95) on train.validate_n held-out states against the "
        "reference solution, and its ratio to Euler with N - 1 steps (val_ratio), in "
        "metrics.jsonl and the progress bar",
        lo=0,
    )
    validate_n: int = _f(256, "held-out initial states of the validation", lo=1, hi=10**6)
    validate_grow: int = _f(
        1,
        "the held-out set may grow to this many times train.validate_n: a check whose mean "
        "error has a standard error above 5 % of it draws a set 4x larger (solved then) and "
        "reads again, until it does not or the set is this large (a heavy tail of rare, large "
        "errors needs thousands of states to measure; 1 = a fixed set)",
        lo=1,
        hi=4096,
    )
    validate_steps: int = _f(
        1,
        "evaluations of the student in a validation check: 1, or K equal jumps of a flow map",
        lo=1,
        hi=10_000,
    )
    tol: float = _f(
        0.0,
        "the accuracy contract: stop at the first validation check whose norm-relative error "
        "mean|x - x*| / mean|x*| on the held-out states, plus its standard error, is <= tol "
        "(0 = off; needs train.validate_every)",
        lo=0,
    )
    stop_at_ratio: float = _f(
        0.0,
        "stop once two consecutive validation checks read val_ratio <= this (0 = never; needs "
        "train.validate_every)",
        lo=0,
        hi=1e12,
    )
    hard_states: float = _f(
        0.0,
        "hard-state replay: this fraction of each batch is drawn again from a pool of recent "
        "collocation points (initial state, time, condition) in proportion to their last "
        "training loss; the rest are fresh uniform draws (0 = off)",
        lo=0,
        hi=0.95,
    )
    hard_pool: int = _f(8, "the replay pool, in batches (train.hard_states)", lo=1, hi=1000)
    hard_weighted: bool = _f(
        False,
        "weight replayed points by 1 / (P pi) so that the objective's expectation stays the "
        "uniform one (train.hard_states); off: hard states count more",
    )


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
        """Every section as one flat table (a kinded section's kind fields beside its own)."""
        return {f.name: flat(getattr(self, f.name)) for f in dataclasses.fields(self)}


SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)
}
