"""odedistill: distil an ODE into a network that solves it in one evaluation (PID, Tee et al. 2024).

The public names load on first use (PEP 562): ``import odedistill`` and ``odedistill --version``
import neither torch, matplotlib nor scipy; ``odedistill.distill`` imports what it needs.
Besides the library, it exports the parts of a run assembled step by step (``load_config``,
``build_session``, ``Trainer``, ``evaluate`` ...) and tools for scripts that record results
(``machine_info``, atomic writes, pictures): ``benchmarks/`` imports nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from odedistill._version import __version__

#: each public name and the module that defines it ('module:name' where the name there differs)
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
    "AverageVelocityFlowMap": "odedistill.models.meanflow",
    "AdaptiveWeight": "odedistill.residuals",
    "eulerian_loss": "odedistill.residuals",
    "eulerian_tangent": "odedistill.residuals",
    "semigroup_loss": "odedistill.residuals",
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
    "sample_errors": "odedistill.solvers",
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
    # a run assembled step by step (what `run_recipe` does in one call) and its parts
    "load_config": "odedistill.infra.recipes",
    "config_from_dict": "odedistill.infra.recipes:from_dict",
    "build_session": "odedistill.infra.build",
    "Session": "odedistill.infra.build",
    "reported_weights": "odedistill.infra.build",
    "weights_of": "odedistill.infra.build",
    "build_system": "odedistill.infra.registries",
    "Trainer": "odedistill.training.trainer",
    "Hook": "odedistill.training.trainer",
    "evaluate": "odedistill.evaluation.report",
    "exact_endpoints": "odedistill.evaluation.report",
    "relative_error": "odedistill.solvers",
    "sample_times": "odedistill.models.flowmap",
    "StudentSampler": "odedistill.sampling.samplers",
    "TeacherSampler": "odedistill.sampling.samplers",
    "SolverSampler": "odedistill.sampling.samplers",
    "generate_samples": "odedistill.infra.seeds:generate",
    "FIDScorer": "odedistill.evaluation.features",
    "fid_from_stats": "odedistill.evaluation.fid",
    "load_fid_ref": "odedistill.evaluation.fid:load_ref",
    "EDMPrecond": "odedistill.teachers",
    "SongUNet": "odedistill.teachers",
    "load_teacher": "odedistill.teachers",
    "save_teacher": "odedistill.teachers",
    "latest_checkpoint": "odedistill.infra.checkpoint",
    "load_checkpoint": "odedistill.infra.checkpoint",
    "cli_main": "odedistill.cli:main",
    # for scripts that record results: the machine, atomic files, pictures
    "machine_info": "odedistill.infra.machine",
    "load_average": "odedistill.infra.machine",
    "git_commit": "odedistill.infra.machine",
    "peak_memory_gib": "odedistill.infra.machine",
    "resolve_device": "odedistill.infra.devices",
    "atomic_write": "odedistill._io",
    "atomic_write_bytes": "odedistill._io",
    "atomic_write_json": "odedistill._io",
    "atomic_write_text": "odedistill._io",
    "image_grid": "odedistill.infra.pictures",
    "plot_curves": "odedistill.infra.pictures",
    "save_image_grid": "odedistill.infra.pictures",
    "to_uint8": "odedistill.infra.pictures",
}

__all__ = [
    "DISTANCES",
    "GRIDS",
    "LPIPS",
    "LPIPSAvgPool",
    "LPIPSMaxPool",
    "MLP",
    "AccuracyWarning",
    "AdaptiveWeight",
    "Autodiff",
    "AverageVelocityFlowMap",
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
    "eulerian_loss",
    "eulerian_tangent",
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
    "sample_errors",
    "semigroup_loss",
    "solve_reference",
    "trajectory_errors",
    "uniform_grid",
    # a run assembled step by step and its parts
    "FIDScorer",
    "EDMPrecond",
    "Hook",
    "Session",
    "SolverSampler",
    "SongUNet",
    "StudentSampler",
    "TeacherSampler",
    "Trainer",
    "build_session",
    "build_system",
    "cli_main",
    "config_from_dict",
    "evaluate",
    "exact_endpoints",
    "fid_from_stats",
    "generate_samples",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "load_fid_ref",
    "load_teacher",
    "relative_error",
    "reported_weights",
    "sample_times",
    "save_teacher",
    "weights_of",
    # for scripts that record results
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "git_commit",
    "image_grid",
    "load_average",
    "machine_info",
    "peak_memory_gib",
    "plot_curves",
    "resolve_device",
    "save_image_grid",
    "to_uint8",
]


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use and keep the name here."""
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'odedistill' has no attribute {name!r}")
    module, _, own_name = where.partition(":")
    value = getattr(importlib.import_module(module), own_name or name)
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
    from odedistill.models.meanflow import AverageVelocityFlowMap
    from odedistill.models.nets import MLP, SmallUNet
    from odedistill.models.parametrisation import Parametrisation
    from odedistill.registry import Registry
    from odedistill.residuals import (
        AdaptiveWeight,
        eulerian_loss,
        eulerian_tangent,
        semigroup_loss,
    )
    from odedistill.schemes import (
        SCHEMES,
        Autodiff,
        Central,
        ResidualScheme,
        Upwind,
        make_scheme,
    )
    from odedistill.solvers import (
        euler,
        heun,
        sample_errors,
        solve_reference,
        trajectory_errors,
    )
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

if TYPE_CHECKING:  # a run assembled step by step and its parts; tools for scripts
    from odedistill._io import (
        atomic_write,
        atomic_write_bytes,
        atomic_write_json,
        atomic_write_text,
    )
    from odedistill.cli import main as cli_main
    from odedistill.evaluation.features import FIDScorer
    from odedistill.evaluation.fid import fid_from_stats
    from odedistill.evaluation.fid import load_ref as load_fid_ref
    from odedistill.evaluation.report import evaluate, exact_endpoints
    from odedistill.infra.build import Session, build_session, reported_weights, weights_of
    from odedistill.infra.checkpoint import latest_checkpoint, load_checkpoint
    from odedistill.infra.devices import resolve_device
    from odedistill.infra.machine import git_commit, load_average, machine_info, peak_memory_gib
    from odedistill.infra.pictures import image_grid, plot_curves, save_image_grid, to_uint8
    from odedistill.infra.recipes import from_dict as config_from_dict
    from odedistill.infra.recipes import load_config
    from odedistill.infra.registries import build_system
    from odedistill.infra.seeds import generate as generate_samples
    from odedistill.models.flowmap import sample_times
    from odedistill.sampling.samplers import SolverSampler, StudentSampler, TeacherSampler
    from odedistill.solvers import relative_error
    from odedistill.teachers import EDMPrecond, SongUNet, load_teacher, save_teacher
    from odedistill.training.trainer import Hook, Trainer
