"""What a kind is: a registry entry that owns its config section, checks, build, checkpoint spec and capabilities.

A recipe picks a kind by name (``student.kind``, ``teacher.kind``, ``system.kind``). The kind
declares the dataclass of its OWN fields (``config``, built with ``odedistill.fields._f``): the
recipe's section then holds the section's common fields plus the kind's, and the kind's are
validated, documented and overridden (``--set``) like any other. Whatever else differs between
kinds is a method or a capability here, never an ``isinstance`` or a name test elsewhere.

This layer sits below the assembly (``odedistill.infra``) and above the maths: a kind sees the
validated config as a plain object and never imports the assembly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.loss import Autocast
from odedistill.systems.base import ODESystem

#: how a noise stream draws a batch's objective indices: (N, n, generator) -> tensors
Indices = Callable[[int, int, torch.Generator], tuple[torch.Tensor, ...]]


@dataclass
class NoOptions:
    """A kind without fields of its own."""


class Kind:
    """A named choice of a recipe section that owns itself, registered under its name
    (``STUDENTS.register("name", MyKind())``); the first line of its docstring is its help in
    the recipe reference.

    Attributes:
        config: the dataclass of the kind's own fields (``NoOptions`` when it has none).
        capabilities: what the kind can do, as words other code tests
            (``"multi_step" in kind.capabilities``).
    """

    config: ClassVar[type] = NoOptions
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def check(self, options: Any, cfg: Any, source: str) -> None:
        """Rules between the kind's own fields and the rest of a validated recipe ``cfg``
        (a one-line ``UserError`` naming the fields and the fix)."""


@dataclass
class ObjectiveParts:
    """What a student kind's training objective is made of, assembled once from the recipe.

    ``ema`` is the first EMA copy of the student (None without EMAs); ``autocast`` opens the
    run's precision around the networks' forward passes; ``through`` lets the gradient through
    the residual's target f(x, t); ``causal_eps`` is ``loss.causal_eps``; ``continuous``:
    collocation times anywhere along the grid (``scheme.times``).
    """

    model: nn.Module
    system: ODESystem
    scheme: Any
    distance: Any
    grid: torch.Tensor
    device: torch.device
    autocast: Autocast
    ema: nn.Module | None = None
    through: bool = False
    causal_eps: float = 0.0
    continuous: bool = False


class StudentKind(Kind):
    """A kind of trajectory student (``student.kind``): how the network becomes the model
    x_θ, what the checkpoint records of it, how it trains and how it is evaluated.

    Capabilities: ``"multi_step"`` (samples in several jumps), ``"two_times"`` (the network
    takes a second time input), ``"causal"`` (takes ``loss.causal_eps``).
    """

    def net_kwargs(self, options: Any) -> dict[str, Any]:
        """Extra constructor arguments of the student's network (stored in its spec)."""
        return {}

    def build(self, net: nn.Module, system: Any, param: Any, options: Any, cfg: Any) -> nn.Module:
        """The student model around ``net`` for ``system`` with parametrisation ``param``
        (``cfg``: the whole validated recipe, for what the kind reads beyond its options)."""
        raise NotImplementedError

    def spec(self, model: nn.Module) -> dict[str, Any]:
        """What a checkpoint records of the model beyond its network and parametrisation
        (numbers and strings only)."""
        return {}

    def rebuild(self, net: nn.Module, spec: dict[str, Any], param: Any) -> nn.Module:
        """The model a checkpoint's student spec describes, around a fresh ``net``."""
        raise NotImplementedError

    def objective(self, parts: ObjectiveParts, options: Any) -> nn.Module:
        """The per-sample loss module: ``objective(z, *indices, cond)`` -> losses (B,)."""
        raise NotImplementedError

    def indices(self, options: Any, continuous: bool) -> Indices:
        """How a noise stream draws the objective's indices for a batch."""
        raise NotImplementedError

    #: names (prefixes) of the network's parameters a warm start may not find in a trained
    #: one-time student's: branches that start at zero (a flow map's second-time embedding)
    fresh_branches: ClassVar[tuple[str, ...]] = ()

    def warm_start(self, model: nn.Module, source: nn.Module) -> None:
        """Start ``model``'s network from the trained student ``source``'s: every weight
        taken over, save the kind's ``fresh_branches``, which keep their initialisation.

        A flow map warm-started from PID's student is, at s = t_start, that student exactly
        (its second-time branch starts at zero); from other s it jumps as the student would
        from an initial state, which training then corrects.
        """
        state = {k: v.detach().clone() for k, v in source.net.state_dict().items()}
        own = model.net.state_dict()
        stray = [k for k in own if k not in state and not k.startswith(self.fresh_branches)]
        stray += [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if stray:
            names = ", ".join(stray[:3])
            raise UserError(
                f"init: the student's network does not fit this one ({names}); start from a "
                "student of the same system, width and depth"
            )
        model.net.load_state_dict(state, strict=False)

    def eval_steps(self, options: Any) -> list[int]:
        """The numbers of jumps the evaluation samples with beside the one-step sample
        (reported as ``student@K``); empty for a one-step student."""
        return []


class Teacher(NamedTuple):
    """A teacher denoiser with the shape of its states and its number of classes.

    ``denoiser`` is None for a teacher known only by its shapes (a student rebuilt from a
    checkpoint samples without its teacher); ``velocity`` is its flow-matching velocity for a
    family that has one (capability ``"velocity"``), else None.
    """

    denoiser: nn.Module | None
    state_shape: tuple[int, ...]
    label_dim: int
    velocity: nn.Module | None = None


class TeacherFamily(Kind):
    """A family of teachers (``teacher.kind``): how its network is built or loaded.

    Capabilities: ``"needs_path"`` (its ``path`` field names the file or folder it loads: it
    is required, and a relative one is looked up beside the recipe), ``"network"`` (its
    denoiser carries a raw network a student can copy: ``model``, ``model_type``,
    ``model_kwargs``, ``parametrisation()``), ``"velocity"`` (it gives a flow-matching
    velocity).
    """

    def build(self, options: Any, cfg: Any, device: torch.device) -> Teacher:
        """The teacher on ``device`` (eval mode and gradients off are the caller's)."""
        raise NotImplementedError


class SystemKind(Kind):
    """A kind of ODE (``system.kind``): how the system is built from the recipe.

    Capabilities: ``"needs_teacher"`` (built around the recipe's teacher), ``"imports"``
    (building it imports a user's module: never done for a name read from a file).
    """

    def build(self, options: Any, cfg: Any, teacher: Teacher | None) -> ODESystem:
        """The system; ``teacher`` is the recipe's (shapes only when rebuilt from a
        checkpoint) for a kind that needs one, else None."""
        raise NotImplementedError
