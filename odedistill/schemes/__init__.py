"""Residual schemes: how the derivative of a curve u ↦ y(u) through the student is estimated (u = t, s, or a step along a direction)."""

from odedistill.registry import Registry
from odedistill.schemes.autodiff import Autodiff
from odedistill.schemes.base import ResidualScheme
from odedistill.schemes.finite_difference import Central, Upwind, three_point_weights

SCHEMES: Registry[type[ResidualScheme]] = Registry("residual scheme")
SCHEMES.register("upwind", Upwind, help="PID's first-order difference, 2 evaluations")
SCHEMES.register("central", Central, help="second-order three-point difference, 3 evaluations")
SCHEMES.register("autodiff", Autodiff, help="exact derivative by forward-mode AD, 1 evaluation")


def make_scheme(name: str, fused: bool = True) -> ResidualScheme:
    """The scheme registered as ``name`` (``SCHEMES.names()``)."""
    return SCHEMES.get(name)(fused=fused)


__all__ = [
    "SCHEMES",
    "Autodiff",
    "Central",
    "ResidualScheme",
    "Upwind",
    "make_scheme",
    "three_point_weights",
]
