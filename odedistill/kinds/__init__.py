"""The registries of kinds: students (``student.kind``), teacher families and systems.

Each built-in kind is one module under ``odedistill.kinds`` and one registration line here;
a new kind is a new module and a new line (or a ``register`` call from a user's code).
"""

from __future__ import annotations

from odedistill.kinds.base import StudentKind, SystemKind, Teacher, TeacherFamily
from odedistill.kinds.students.flowmap import FlowMapStudent
from odedistill.kinds.students.pid import PIDStudent
from odedistill.kinds.systems.builtin import BuiltinKind
from odedistill.kinds.systems.flow_matching import FlowMatchingKind
from odedistill.kinds.systems.probability_flow import ProbabilityFlowKind
from odedistill.kinds.systems.user import USER_NAME, SystemRegistry, UserKind
from odedistill.kinds.teachers.diffusers import DiffusersFamily
from odedistill.kinds.teachers.edm import EDMFamily
from odedistill.kinds.teachers.edm_random import EDMRandomFamily
from odedistill.kinds.teachers.mixture import MixtureFamily
from odedistill.registry import Registry
from odedistill.systems.linear import LinearODE
from odedistill.systems.pendulum import DampedPendulum

STUDENTS: Registry[StudentKind] = Registry("student kind")
TEACHERS: Registry[TeacherFamily] = Registry("teacher family")
SYSTEMS = SystemRegistry("system kind")

STUDENTS.register("pid", PIDStudent())
STUDENTS.register("flowmap", FlowMapStudent())


TEACHERS.register("gaussian_mixture", MixtureFamily())
TEACHERS.register("edm", EDMFamily())
TEACHERS.register("diffusers", DiffusersFamily())
TEACHERS.register("edm_random", EDMRandomFamily())

SYSTEMS.register("probability_flow", ProbabilityFlowKind())
SYSTEMS.register("flow_matching", FlowMatchingKind())
SYSTEMS.register("linear", BuiltinKind(LinearODE), help="LinearODE, a decaying spiral")
SYSTEMS.register("pendulum", BuiltinKind(DampedPendulum), help="DampedPendulum")
SYSTEMS.register(USER_NAME, UserKind())

__all__ = [
    "STUDENTS",
    "SYSTEMS",
    "TEACHERS",
    "StudentKind",
    "SystemKind",
    "Teacher",
    "TeacherFamily",
]
