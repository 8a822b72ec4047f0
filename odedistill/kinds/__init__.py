"""The registries of kinds: students (``student.kind``), teacher families and systems.

Each built-in kind is one module under ``odedistill.kinds`` and one registration line here;
a new kind is a new module and a new line (or a ``register`` call from a user's code).
"""

from __future__ import annotations

from odedistill.kinds.base import StudentKind, SystemKind, TeacherFamily
from odedistill.kinds.students.flowmap import FlowMapStudent
from odedistill.kinds.students.pid import PIDStudent
from odedistill.registry import Registry

STUDENTS: Registry[StudentKind] = Registry("student kind")
TEACHERS: Registry[TeacherFamily] = Registry("teacher family")
SYSTEMS: Registry[SystemKind] = Registry("system kind")

STUDENTS.register("pid", PIDStudent())
STUDENTS.register("flowmap", FlowMapStudent())

__all__ = ["STUDENTS", "SYSTEMS", "TEACHERS", "StudentKind", "SystemKind", "TeacherFamily"]
