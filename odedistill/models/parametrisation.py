"""The student's parametrisation and a teacher's skip scaling, as the models see them.

Defined in :mod:`odedistill.parametrisation`, below the systems (which name their default
parametrisation and flow-map skip); re-exported here for the trajectory models.
"""

from odedistill.parametrisation import (
    MAPS,
    ConstantScale,
    DiscreteTimesteps,
    EDMNoise,
    IdentityTime,
    Parametrisation,
    RootScale,
    SkipScaling,
    TimeMap,
    UnitTime,
    VENoise,
    VPNoise,
    time_map,
)

__all__ = [
    "MAPS",
    "ConstantScale",
    "DiscreteTimesteps",
    "EDMNoise",
    "IdentityTime",
    "Parametrisation",
    "RootScale",
    "SkipScaling",
    "TimeMap",
    "UnitTime",
    "VENoise",
    "VPNoise",
    "time_map",
]
