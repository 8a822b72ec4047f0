"""Self-contained students: a checkpoint rebuilds its student without the recipe, the teacher or other weights.

Every training checkpoint holds ``student``: a JSON description of the student (the network's
class and constructor arguments, the parametrisation, the interval, the state shape, the
number of classes and the system's recipe section) beside the raw and EMA weights. Rebuilding
runs no code from the file: the network class must be one of ``NETWORK_CLASSES``, the
parametrisation is numbers, and the weights are read with ``torch.load(weights_only=True)``.

A student is a network with a parametrisation, so any student samples from its file alone
(``load_student(path).sample(z)``). Drawing initial states needs the system: a built-in one is
rebuilt from the file's numbers; a user's own class (``"module:Class"``) is never imported
from what a file names: the user names it again (``odedistill sample RUN --system
module:Class``, ``read_student(path, system=...)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.grids import make_grid
from odedistill.infra.checkpoint import latest_checkpoint, load_checkpoint, stored_weights
from odedistill.infra.devices import resolve_device
from odedistill.infra.recipes import from_dict
from odedistill.infra.registries import TEACHER_NETWORKS
from odedistill.kinds import STUDENTS, SYSTEMS, Teacher
from odedistill.models.base import TrajectoryModel
from odedistill.models.flowmap import sample_times
from odedistill.models.nets import MLP, SmallUNet
from odedistill.models.parametrisation import Parametrisation
from odedistill.systems.base import ODESystem

STUDENT_FORMAT = "odedistill-student-1"

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "MLP": MLP,
    "SmallUNet": SmallUNet,
    **TEACHER_NETWORKS,
}
"""The network classes a student file may name: what can be rebuilt from JSON arguments (a
diffusers UNet from its ``UNet2DModel`` config: ``DiffusersUNet(config, dropout)``)."""


@dataclass
class LoadedStudent:
    """A student read from a checkpoint: the model (eval mode, no gradients), its system
    (rebuilt without its teacher; None for a system given as a Python object), which weights
    and from which step."""

    model: TrajectoryModel
    system: ODESystem | None
    weights: str
    step: int
    path: Path
    grid: torch.Tensor
    system_kind: str = ""

    def require_system(self) -> ODESystem:
        """The system, or a ``UserError`` saying how to name a user's own class again."""
        if self.system is not None:
            return self.system
        if self.system_kind == "object":
            raise UserError(
                f"{self.path}: the run's system was a Python object; sample it through the "
                "library: odedistill.load_student(path).sample(z) with your own initial states"
            )
        raise UserError(
            f"{self.path}: the run's system is your own class {self.system_kind!r}, which odedistill "
            f"never imports because a file names it; name it again: --system {self.system_kind} "
            "(or sample in Python: odedistill.load_student(path).sample(z))"
        )

    def sample_times(self, steps: int) -> list[float]:
        """The times of a ``steps``-step sample on the run's collocation grid."""
        return sample_times(self.grid, steps)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its newest checkpoint) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise UserError(
                f"{path} holds no checkpoint; give a run directory with checkpoints/ "
                "or a .pt checkpoint file"
            )
        return ckpt
    if not path.is_file():
        raise UserError(f"no run directory or checkpoint at {path}")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint's contents, memory-mapped on the CPU; other files are a ``UserError``."""
    return load_checkpoint(path, map_location="cpu", mmap=True)


def weight_names(state: dict[str, Any], spec: str) -> list[str]:
    """Names ('raw', 'ema0.999', ...) of the weights ``spec`` picks from a checkpoint.

    ``spec`` is a comma list of 'raw', 'ema' (the first rate), a rate ('0.999' or 'ema0.999')
    or 'all' (every EMA and the raw weights).
    """
    emas = list(state.get("ema", {}))
    names: list[str] = []
    for item in str(spec).replace(" ", "").split(","):
        if item == "all":
            picked = ["raw", *(f"ema{k}" for k in emas)]
        elif item == "raw":
            picked = ["raw"]
        elif item == "ema":
            if not emas:
                raise UserError("the run kept no EMA; use --weights raw")
            picked = [f"ema{emas[0]}"]
        else:
            try:
                key = repr(float(item.removeprefix("ema")))
            except ValueError:
                raise UserError(
                    f"--weights expects 'ema', 'raw', 'all' or an EMA rate, got {item!r}"
                ) from None
            if key not in emas:
                have = ", ".join(emas) if emas else "none"
                raise UserError(f"no EMA with rate {item} in the checkpoint; it has {have}")
            picked = [f"ema{key}"]
        names += [n for n in picked if n not in names]
    return names


def student_spec(state: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        spec = json.loads(state["student"])
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: the student description is not JSON ({e})") from None
    if not isinstance(spec, dict) or spec.get("format") != STUDENT_FORMAT:
        raise UserError(f"{where}: unknown student description format; expected {STUDENT_FORMAT}")
    return spec


def rebuild_network(spec: dict[str, Any], where: str) -> nn.Module:
    """The network a student description names, with fresh weights."""
    net = spec.get("network") or {}
    name, kwargs = net.get("class"), net.get("kwargs")
    if name not in NETWORK_CLASSES or not isinstance(kwargs, dict):
        raise UserError(
            f"{where}: the student's network {name!r} is not one odedistill can rebuild "
            f"({', '.join(NETWORK_CLASSES)}); build it yourself and load the weights"
        )
    try:
        return NETWORK_CLASSES[name](**kwargs)
    except (TypeError, ValueError, ArithmeticError, IndexError, KeyError, RuntimeError) as e:
        raise UserError(f"{where}: cannot build {name} from the stored arguments ({e})") from None


def rebuild_system(
    spec: dict[str, Any], where: str, kind: str | ODESystem | None = None
) -> ODESystem | None:
    """The student's system, without its teacher: enough to draw initial states and conditions.

    A built-in system is rebuilt from the file. A user's own class is imported only when the
    user names it again as ``kind`` ('module:Class', searched in the current folder and on
    the Python path, built with the run's ``system.args``) or gives the system object itself;
    without it: None.
    """
    section = dict(spec.get("system") or {})
    stored = section.get("kind")
    if isinstance(kind, ODESystem):
        if tuple(kind.state_shape) != tuple(spec["state_shape"]):
            raise UserError(
                f"{where}: the student's states have shape {tuple(spec['state_shape'])}, the "
                f"given system's {tuple(kind.state_shape)}"
            )
        return kind
    if kind is not None:
        if SYSTEMS.is_builtin(stored):
            raise UserError(
                f"{where}: the run's system is the built-in {stored!r}; drop --system {kind}"
            )
        if not SYSTEMS.is_user_kind(kind):
            raise UserError(f"--system expects package.module:ClassName, got {kind!r}")
        section = {"kind": kind, "path": ".", "args": section.get("args", {})}
    elif not SYSTEMS.is_builtin(stored):
        return None
    cfg = from_dict({"system": section}, source=f"{where} (student's system)")
    kind = SYSTEMS.get(cfg.system.kind)
    shapes = Teacher(None, tuple(spec["state_shape"]), int(spec["label_dim"]))
    teacher = shapes if "needs_teacher" in kind.capabilities else None
    return kind.build(cfg.system.options, cfg, teacher)


#: student kinds under the names older checkpoints gave them
OLD_KIND_NAMES = {"boundary": "pid"}


def rebuild_student(spec: dict[str, Any], where: str = "student") -> TrajectoryModel:
    """A student of the described kind, architecture and parametrisation, with fresh weights."""
    name = spec.get("trajectory")
    name = OLD_KIND_NAMES.get(name, name) if isinstance(name, str) else name
    if name not in STUDENTS:
        raise UserError(f"{where}: unknown student kind {name!r}{STUDENTS.suggest(str(name))}")
    param = Parametrisation.from_dict(spec["parametrisation"])
    net = rebuild_network(spec, where)
    model = STUDENTS.get(name).rebuild(net, spec, param)
    model.state_shape = tuple(int(n) for n in spec["state_shape"])
    return model


def load_weights(
    model: nn.Module, state: dict[str, Any], name: str, where: str = "the checkpoint"
) -> nn.Module:
    """Load the weights ``name`` (from ``weight_names``) of a checkpoint into ``model``.

    The state comes from ``load_checkpoint``, which refuses a damaged file; the weights must also
    be finite: a diverged run is a ``UserError`` naming the file, never samples of NaN.
    """
    weights = stored_weights(state, name)
    bad = [k for k, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise UserError(
            f"{where}: the {name} weights are not finite ({bad[0]}); the run diverged before "
            "this checkpoint, use an earlier one"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{where}: the weights do not fit its student ({first})") from None
    return model.eval().requires_grad_(False)


def read_student(
    path: str | Path,
    weights: str = "ema",
    device: str | torch.device = "cpu",
    system: str | ODESystem | None = None,
) -> LoadedStudent:
    """The student of a run directory (newest checkpoint) or checkpoint file, with its system.

    ``system`` names a user's own system class again ('module:Class') or is the system
    itself; see ``rebuild_system``.
    """
    ckpt = resolve_checkpoint(path)
    state = read_checkpoint(ckpt)
    names = weight_names(state, weights)
    if len(names) != 1:
        raise UserError(f"--weights {weights!r} names {len(names)} sets of weights; pick one")
    spec = student_spec(state, str(ckpt))
    model = load_weights(rebuild_student(spec, str(ckpt)), state, names[0], str(ckpt))
    g = spec["grid"]
    grid = make_grid(g["kind"], int(g["N"]), spec["t_start"], spec["t_end"], float(g["rho"]))
    return LoadedStudent(
        model.to(resolve_device(device)),
        rebuild_system(spec, str(ckpt), system),
        names[0],
        int(state.get("step", 0)),
        ckpt,
        grid,
        str((spec.get("system") or {}).get("kind", "")),
    )


def load_student(
    path: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
) -> TrajectoryModel:
    """A trained student, ready to sample: ``load_student("runs/quickstart").sample(z)``.

    Args:
        path: a run directory (its newest checkpoint) or a checkpoint file.
        weights: 'ema' (the first EMA rate), 'raw' or a rate such as '0.999'.
        device: where the model goes.

    Needs neither the recipe nor the teacher: the checkpoint describes the student.
    """
    return read_student(path, weights, device).model
