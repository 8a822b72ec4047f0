"""odedistill: distil an ODE into a network that solves it in one evaluation (PID, Tee et al. 2024)."""

from odedistill.api import distill
from odedistill.distances import LPIPS, Distance, PseudoHuber, SquaredL2, make_distance
from odedistill.errors import TrainingDiverged, UserError
from odedistill.grids import karras_grid, make_grid, uniform_grid
from odedistill.loss import pid_loss
from odedistill.models.base import TrajectoryModel
from odedistill.models.boundary import BoundaryTrajectory
from odedistill.models.nets import MLP, SmallUNet
from odedistill.schemes import Autodiff, Central, ResidualScheme, Upwind, make_scheme
from odedistill.solvers import euler, heun, solve_reference
from odedistill.systems.base import ODESystem
from odedistill.systems.linear import LinearODE
from odedistill.systems.pendulum import DampedPendulum
from odedistill.systems.probability_flow import ProbabilityFlowODE
from odedistill.teachers.gaussian_mixture import (
    GaussianMixtureDenoiser,
    digits_mixture,
    grid_mixture,
    ring_mixture,
)

__version__ = "0.1.0"

__all__ = [
    "LPIPS",
    "MLP",
    "Autodiff",
    "BoundaryTrajectory",
    "Central",
    "Distance",
    "GaussianMixtureDenoiser",
    "DampedPendulum",
    "LinearODE",
    "ODESystem",
    "ProbabilityFlowODE",
    "PseudoHuber",
    "ResidualScheme",
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
    "make_distance",
    "make_grid",
    "make_scheme",
    "pid_loss",
    "ring_mixture",
    "solve_reference",
    "uniform_grid",
]
