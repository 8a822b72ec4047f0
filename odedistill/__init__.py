"""odedistill: distil an ODE into a network that solves it in one evaluation (PID, Tee et al. 2024)."""

from odedistill._version import __version__
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
from odedistill.models.boundary import BoundaryTrajectory
from odedistill.models.flowmap import FlowMap
from odedistill.models.nets import MLP, SmallUNet
from odedistill.models.parametrisation import Parametrisation
from odedistill.registry import Registry
from odedistill.schemes import SCHEMES, Autodiff, Central, ResidualScheme, Upwind, make_scheme
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

__all__ = [
    "DISTANCES",
    "GRIDS",
    "LPIPS",
    "LPIPSAvgPool",
    "LPIPSMaxPool",
    "MLP",
    "AccuracyWarning",
    "Autodiff",
    "BoundaryTrajectory",
    "Central",
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
