"""The fields of a recipe section, including the sections whose fields depend on their ``kind``.

A section such as ``[student]`` holds fields of its own (``kind``, ``net``, ...) and the fields
of the kind it names: ``student.kind = "flowmap"`` adds the flow map's ``steps``, ``p_T``, ...
The section's dataclass then derives from ``KindedSection`` and names its registry of kinds;
each kind declares the dataclass of its own fields (``kind.config``), which the section keeps
as ``options``. In a recipe both are one flat table.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from odedistill.registry import Registry


class KindedSection:
    """Mixin of a section dataclass whose ``kind`` picks further fields: declare ``KINDS`` (the
    registry) and the last field ``options: Any = field(default=None, metadata=OPTIONS)``; the
    options default to the kind's own config."""

    KINDS: ClassVar[Registry]
    kind: str
    options: Any

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = self.KINDS.get(self.kind).config()


#: the metadata of a kinded section's ``options`` field (not a recipe key itself)
OPTIONS = {"options": True}


@dataclass(frozen=True)
class FieldInfo:
    """One recipe field: ``section.name``, its type and metadata, and the kind that owns it
    (None: a field of the section itself)."""

    section: str
    name: str
    type: Any
    field: dataclasses.Field
    kind: str | None = None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.field.metadata)

    def default(self) -> Any:
        f = self.field
        return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def _fields(section: str, cls: type, kind: str | None) -> list[FieldInfo]:
    hints = typing.get_type_hints(cls)
    return [
        FieldInfo(section, f.name, hints[f.name], f, kind)
        for f in dataclasses.fields(cls)
        if not f.metadata.get("options")
    ]


def kinds_of(cls: type) -> Registry | None:
    """The registry of kinds of a kinded section's dataclass, else None."""
    return cls.KINDS if isinstance(cls, type) and issubclass(cls, KindedSection) else None


def section_fields(section: str, cls: type, kind: str | None = None) -> list[FieldInfo]:
    """The section's own fields, then those of ``kind`` (every registered kind's when None)."""
    out = _fields(section, cls, None)
    registry = kinds_of(cls)
    if registry is not None:
        for name in registry.names() if kind is None else [kind]:
            out += _fields(section, registry.get(name).config, name)
    return out


def kind_field_clash(section: str, cls: type) -> str | None:
    """A kind's field that repeats one of the section's own (refused at registration)."""
    own = {f.name for f in _fields(section, cls, None)}
    registry = kinds_of(cls)
    for name in registry.names() if registry is not None else []:
        for f in _fields(section, registry.get(name).config, name):
            if f.name in own:
                return f"{section}.kind {name!r} declares '{f.key}', a field of [{section}]"
    return None


def flat(section: Any) -> dict[str, Any]:
    """A section as one table: its own fields and, for a kinded section, its kind's."""
    body = {
        f.name: getattr(section, f.name)
        for f in dataclasses.fields(section)
        if not f.metadata.get("options")
    }
    options = getattr(section, "options", None) if isinstance(section, KindedSection) else None
    if options is not None:
        body.update(dataclasses.asdict(options))
    return copy.deepcopy(body)
