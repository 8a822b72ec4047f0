"""odedistill: distil an ODE into a network that solves it in one evaluation (PID, Tee et al. 2024).

The public names load on first use (PEP 562): ``import odedistill`` and ``odedistill --version``
import neither torch, matplotlib nor scipy; ``odedistill.distill`` imports what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from odedistill._version import __version__

#: each public name and the module that defines it
_EXPORTS = {
    "distill": "odedistill.api",
    "run_recipe": "odedistill.api",
    "DISTANCES": "odedistill.distances",
    "LPIPS": "odedistill.distances",
    "Distance": "odedistill.distances",
    "LPIPSAvgPool": "odedistill.distances",
    "LPIPSMaxPool": "odedistill.distances",
    "PseudoHuber": "odedistill.distances",
    "SquaredL2": "odedistill.distances",
    "make_distance": "odedistill.distances",
    "AccuracyWarning": "odedistill.errors",
    "TrainingDiverged": "odedistill.errors",
    "UserError": "odedistill.errors",
    "GRIDS": "odedistill.grids",
    "karras_grid": "odedistill.grids",
    "make_grid": "odedistill.grids",
    "uniform_grid": "odedistill.grids",
    "load_student": "odedistill.infra.students",
    "pid_loss": "odedistill.loss",
    "residual_loss": "odedistill.loss",
    "Path": "odedistill.models.base",
    "Curve": "odedistill.models.curve",
    "along": "odedistill.models.curve",
    "centred_nodes": "odedistill.models.curve",
    "TrajectoryModel": "odedistill.models.base",
    "FlowMap": "odedistill.models.flowmap",
    "MLP": "odedistill.models.nets",
    "SmallUNet": "odedistill.models.nets",
    "Parametrisation": "odedistill.models.parametrisation",
    "Registry": "odedistill.registry",
    "SCHEMES": "odedistill.schemes",
    "Autodiff": "odedistill.schemes",
    "Central": "odedistill.schemes",
    "ResidualScheme": "odedistill.schemes",
    "Upwind": "odedistill.schemes",
    "make_scheme": "odedistill.schemes",
    "euler": "odedistill.solvers",
    "heun": "odedistill.solvers",
    "solve_reference": "odedistill.solvers",
    "trajectory_errors": "odedistill.solvers",
    "ODESystem": "odedistill.systems.base",
    "FlowMatchingODE": "odedistill.systems.flow_matching",
    "LinearODE": "odedistill.systems.linear",
    "DampedPendulum": "odedistill.systems.pendulum",
    "ProbabilityFlowODE": "odedistill.systems.probability_flow",
    "GaussianMixtureDenoiser": "odedistill.teachers.gaussian_mixture",
    "GaussianMixtureVelocity": "odedistill.teachers.gaussian_mixture",
    "digits_mixture": "odedistill.teachers.gaussian_mixture",
    "grid_mixture": "odedistill.teachers.gaussian_mixture",
    "ring_mixture": "odedistill.teachers.gaussian_mixture",
}

__all__ = [
    "DISTANCES",
    "GRIDS",
    "LPIPS",
    "LPIPSAvgPool",
    "LPIPSMaxPool",
    "MLP",
    "AccuracyWarning",
    "Autodiff",
    "Central",
    "Curve",
    "Distance",
    "FlowMap",
    "FlowMatchingODE",
    "GaussianMixtureDenoiser",
    "GaussianMixtureVelocity",
    "DampedPendulum",
    "LinearODE",
    "ODESystem",
    "Parametrisation",
    "Path",
    "ProbabilityFlowODE",
    "PseudoHuber",
    "Registry",
    "ResidualScheme",
    "SCHEMES",
    "SmallUNet",
    "SquaredL2",
    "TrainingDiverged",
    "TrajectoryModel",
    "Upwind",
    "UserError",
    "__version__",
    "along",
    "centred_nodes",
    "digits_mixture",
    "distill",
    "euler",
    "grid_mixture",
    "heun",
    "karras_grid",
    "load_student",
    "make_distance",
    "make_grid",
    "make_scheme",
    "pid_loss",
    "residual_loss",
    "ring_mixture",
    "run_recipe",
    "solve_reference",
    "trajectory_errors",
    "uniform_grid",
]


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'odedistill' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # the same names, eagerly, for type checkers and editors
    from odedistill.api import distill, run_recipe
    from odedistill.distances import (
        DISTANCES,
        LPIPS,
        Distance,
        LPIPSAvgPool,
        LPIPSMaxPool,
        PseudoHuber,
        SquaredL2,
        make_distance,
    )
    from odedistill.errors import AccuracyWarning, TrainingDiverged, UserError
    from odedistill.grids import GRIDS, karras_grid, make_grid, uniform_grid
    from odedistill.infra.students import load_student
    from odedistill.loss import pid_loss, residual_loss
    from odedistill.models.base import Path, TrajectoryModel
    from odedistill.models.curve import Curve, along, centred_nodes
    from odedistill.models.flowmap import FlowMap
    from odedistill.models.nets import MLP, SmallUNet
    from odedistill.models.parametrisation import Parametrisation
    from odedistill.registry import Registry
    from odedistill.schemes import (
        SCHEMES,
        Autodiff,
        Central,
        ResidualScheme,
        Upwind,
        make_scheme,
    )
    from odedistill.solvers import euler, heun, solve_reference, trajectory_errors
    from odedistill.systems.base import ODESystem
    from odedistill.systems.flow_matching import FlowMatchingODE
    from odedistill.systems.linear import LinearODE
    from odedistill.systems.pendulum import DampedPendulum
    from odedistill.systems.probability_flow import ProbabilityFlowODE
    from odedistill.teachers.gaussian_mixture import (
        GaussianMixtureDenoiser,
        GaussianMixtureVelocity,
        digits_mixture,
        grid_mixture,
        ring_mixture,
    )
