"""Residual schemes: how the student's time derivative is estimated."""

from odedistill.schemes.autodiff import Autodiff
from odedistill.schemes.base import ResidualScheme
from odedistill.schemes.finite_difference import Central, Upwind, three_point_weights

SCHEMES: dict[str, type[ResidualScheme]] = {
    "upwind": Upwind,
    "central": Central,
    "autodiff": Autodiff,
}


def make_scheme(name: str, fused: bool = True) -> ResidualScheme:
    """The scheme called ``name`` ('upwind', 'central' or 'autodiff')."""
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; expected one of {sorted(SCHEMES)}")
    return SCHEMES[name](fused=fused)


__all__ = [
    "Autodiff",
    "Central",
    "ResidualScheme",
    "SCHEMES",
    "Upwind",
    "make_scheme",
    "three_point_weights",
]
