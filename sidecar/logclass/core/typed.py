"""Plain data (what YAML and JSON hold) as frozen dataclasses, and back.

The types are the one description of a format's shape: the settings (``config.settings``), a
bundle's manifest, rules and labels files. A JSON Schema is generated from them
(``core.schema``), data is validated against it, then ``parse`` builds the dataclasses and
``to_plain`` turns them back into plain data. Constraints ride on the types as
``Annotated[..., Json(...)]`` (JSON Schema keywords); ``MayOmit(...)`` marks a key that may be
absent and what absence means.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar


class Json:
    """JSON Schema keywords for the annotated type, e.g. ``Json(minimum=1, description="...")``."""

    __slots__ = ("keywords",)

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords


class MayOmit:
    """A key that may be left out; absent means ``value``. With ``omit_default`` the key is also
    left out when written while it holds ``value``, so a file reads and writes back the same
    (a manifest written before the key existed); for ``X | None`` the schema then allows X only,
    as null is never written."""

    __slots__ = ("omit_default", "value")

    def __init__(self, value: Any, *, omit_default: bool = False) -> None:
        self.value = value
        self.omit_default = omit_default


# An optional key of a file format: absent reads as None, and None is written as absent.
ABSENT = MayOmit(None, omit_default=True)
# The value of an omitted mapping: one shared instance, so it must not be changed.
EMPTY: Mapping[str, Any] = types.MappingProxyType({})


def doc(text: str) -> Json:
    return Json(description=text)


T = TypeVar("T")


_HINTS: dict[type[Any], dict[str, Any]] = {}


def field_types(cls: type[Any]) -> dict[str, Any]:
    """Each field's annotation, ``Annotated`` metadata kept. Cached (writing a manifest or
    printing the settings asks per object): callers must not change the dict."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return hints


def may_omit(tp: Any) -> MayOmit | None:
    """The ``MayOmit`` of a field's annotation, if any."""
    return next((m for m in split_annotated(tp)[1] if isinstance(m, MayOmit)), None)


def subsection(cls: type[Any] | None, name: str) -> type[Any] | None:
    """The type of field ``name`` of ``cls`` when it is a dataclass (a section), else None."""
    if cls is None:
        return None
    tp = field_types(cls).get(name)
    inner, _ = split_annotated(tp)
    return typing.cast(type[Any], inner) if dataclasses.is_dataclass(inner) else None


def split_annotated(tp: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, m1, m2]`` -> ``(X, [m1, m2])``; nested ones are flattened by Python."""
    if typing.get_origin(tp) is Annotated:
        inner, *meta = typing.get_args(tp)
        return inner, meta
    return tp, []


def is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def tuple_items(tp: Any) -> tuple[Any, ...] | None:
    """The item types of a fixed-length ``tuple[X, Y]``; None for ``tuple[X, ...]``."""
    args = typing.get_args(tp)
    return None if len(args) == 2 and args[1] is Ellipsis else args


def parse(cls: type[T], data: Mapping[str, Any]) -> T:
    """Builds ``cls`` from validated plain data; omitted keys get their ``MayOmit`` value."""
    values: dict[str, Any] = {}
    for name, tp in field_types(cls).items():
        inner, _ = split_annotated(tp)
        if name in data:
            values[name] = _value(inner, data[name])
        else:
            # The schema let it be absent only where a MayOmit says what absence means.
            omitted = may_omit(tp)
            if omitted is None:
                raise TypeError(f"{cls.__name__}.{name} is required: validate the data before parsing it")
            values[name] = omitted.value
    return cls(**values)


def _value(tp: Any, value: Any) -> Any:
    tp, _ = split_annotated(tp)
    if value is None:
        return None
    if is_union(tp):
        return _value(_union_member(tp, value), value)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return parse(typing.cast(type[Any], tp), value)
    if origin is tuple:
        fixed = tuple_items(tp)
        if fixed is not None:
            return tuple(_value(item, v) for item, v in zip(fixed, value, strict=True))
        item = typing.get_args(tp)[0]
        return tuple(_value(item, v) for v in value)
    if origin is Mapping or origin is dict:
        item = typing.get_args(tp)[1]
        return {str(k): _value(item, v) for k, v in value.items()}
    return value


def _union_member(tp: Any, value: Any) -> Any:
    """The member of a union that validated ``value`` matches (the schema made it unambiguous)."""
    for member in typing.get_args(tp):
        inner, _ = split_annotated(member)
        if inner is type(None):
            continue
        if typing.get_origin(inner) is Literal:
            if value in typing.get_args(inner):
                return member
            continue
        if dataclasses.is_dataclass(inner) or typing.get_origin(inner) in (Mapping, dict):
            if isinstance(value, Mapping):
                return member
            continue
        if typing.get_origin(inner) is tuple:
            if isinstance(value, list | tuple):
                return member
            continue
        if isinstance(value, inner) or (inner is float and isinstance(value, int)):
            return member
    raise TypeError(f"{value!r} matches no member of {tp}")  # the schema should have refused it


def to_plain(value: Any) -> Any:
    """Plain data (dicts, lists, scalars) in field order; ``omit_default`` keys holding their
    default are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = field_types(type(value))
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            omitted = may_omit(hints[f.name])
            if omitted is None or not omitted.omit_default or item != omitted.value:
                out[f.name] = to_plain(item)
        return out
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value
