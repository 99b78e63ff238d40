"""JSON Schema (Draft 2020-12) generated from a format's types (``core.typed``), and plain data
checked against it.

``generate`` gives the schema of a dataclass: every field is required and no other key is
allowed, except the keys marked ``MayOmit``. The schema files committed beside the code are
written from it by ``make schema`` (``logclass.config.schema_gen``), and a test fails when one
is stale. ``load`` checks data against the generated schema and builds the dataclass; a problem
is one line naming the key, what it must be and what it is.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import jsonschema

from logclass.core.typed import Json, field_types, is_union, may_omit, parse, split_annotated, tuple_items
from logclass.errors import LogclassError

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# The committed schemas of the file formats defined in core (manifest, rules, labels).
SCHEMAS_DIR = Path(__file__).resolve().with_name("schemas")
_PRIMITIVES: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}

T = TypeVar("T")


def generate(cls: type[Any], title: str) -> dict[str, Any]:
    return {"$schema": DRAFT, "title": title, **schema_of(cls)}


def render(cls: type[Any], title: str) -> str:
    """The schema as the committed file holds it."""
    return json.dumps(generate(cls, title), indent=2, ensure_ascii=False) + "\n"


def schema_of(tp: Any) -> dict[str, Any]:
    inner, meta = split_annotated(tp)
    out = _bare(inner)
    for marker in meta:
        if isinstance(marker, Json):
            out.update(marker.keywords)
    return out


def _bare(tp: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(tp):
        return _object(typing.cast(type[Any], tp))
    if is_union(tp):
        return _union(typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is Literal:
        values = list(typing.get_args(tp))
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin is tuple:
        return _array(tp)
    if origin is Mapping or origin is dict:
        return {"type": "object", "additionalProperties": schema_of(typing.get_args(tp)[1])}
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    raise TypeError(f"no JSON Schema for {tp!r}: use bool, int, float, str, Literal, tuple, Mapping or a dataclass")


def _array(tp: Any) -> dict[str, Any]:
    fixed = tuple_items(tp)
    if fixed is None:
        return {"type": "array", "items": schema_of(typing.get_args(tp)[0])}
    return {
        "type": "array",
        "prefixItems": [schema_of(item) for item in fixed],
        "items": False,
        "minItems": len(fixed),
    }


def _object(cls: type[Any]) -> dict[str, Any]:
    hints = field_types(cls)
    required = [name for name, tp in hints.items() if may_omit(tp) is None]
    out: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if required:
        out["required"] = required
    out["properties"] = {name: _field(tp) for name, tp in hints.items()}
    return out


def _field(tp: Any) -> dict[str, Any]:
    """A field's schema; a key left out instead of written as null allows no null."""
    omitted = may_omit(tp)
    inner, meta = split_annotated(tp)
    if omitted is None or not omitted.omit_default or omitted.value is not None or not is_union(inner):
        return schema_of(tp)
    members = [m for m in typing.get_args(inner) if m is not type(None)]
    out = _bare(members[0]) if len(members) == 1 else {"oneOf": [schema_of(m) for m in members]}
    for marker in meta:
        if isinstance(marker, Json):
            out.update(marker.keywords)
    return out


def _union(members: tuple[Any, ...]) -> dict[str, Any]:
    nullable = type(None) in members
    others = [m for m in members if m is not type(None)]
    if len(others) > 1:
        out: dict[str, Any] = {"oneOf": [schema_of(m) for m in others]}
        return {"oneOf": [*out["oneOf"], {"type": "null"}]} if nullable else out
    out = schema_of(others[0])
    if not nullable:
        return out
    # X | None keeps X's keywords (they do not apply to null) and widens its type or enum.
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    elif "enum" in out:
        out["enum"] = [*out["enum"], None]
    else:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


# --- checking data against a format's schema ---------------------------------------------------

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong at ``path`` (keys and list indexes from the top of the data)."""

    path: KeyPath
    text: str  # "must be a non-empty string, not null"

    def __str__(self) -> str:
        return f"'{dotted(self.path)}' {self.text}" if self.path else self.text


def dotted(path: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in path)


_VALIDATORS: dict[type[Any], jsonschema.Draft202012Validator] = {}


def _validator(cls: type[Any]) -> jsonschema.Draft202012Validator:
    """Built once per format: generating the schema walks every type."""
    validator = _VALIDATORS.get(cls)
    if validator is None:
        validator = _VALIDATORS[cls] = jsonschema.Draft202012Validator(generate(cls, cls.__name__))
    return validator


# A file wrong everywhere (a hostile one, or the wrong file) is not walked to its end for errors.
MAX_PROBLEMS = 100


def problems(cls: type[Any], data: object) -> list[Problem]:
    """What is wrong with ``data`` as a ``cls`` (at most MAX_PROBLEMS), in the order of their
    paths; [] when it fits."""
    found: dict[tuple[KeyPath, str], None] = {}
    for err in itertools.islice(_validator(cls).iter_errors(data), MAX_PROBLEMS):
        for problem in _problems_of(err):
            found.setdefault((problem.path, problem.text))
    ordered = sorted(found, key=lambda item: tuple(_sort_key(part) for part in item[0]))
    return [Problem(path, text) for path, text in ordered]


def _sort_key(part: str | int) -> tuple[int, int, str]:
    # List indexes in number order; YAML keys may be of any type, so compared as text.
    return (0, part, "") if isinstance(part, int) else (1, 0, str(part))


def remainder(found: list[Problem]) -> str:
    """How many problems follow the first one, as a message tells it."""
    if len(found) >= MAX_PROBLEMS:
        return " (and many more)"
    return f" (and {len(found) - 1} more)" if len(found) > 1 else ""


def load(cls: type[T], data: object, origin: str, error: type[LogclassError]) -> T:
    """``data`` as a ``cls``; else ``error`` naming ``origin`` (the file) and the first problem."""
    found = problems(cls, data)
    if found:
        raise error(f"{origin}: {found[0]}{remainder(found)}")
    return parse(cls, typing.cast(Mapping[str, Any], data))


def _problems_of(err: jsonschema.ValidationError) -> list[Problem]:
    path: KeyPath = tuple(err.absolute_path)
    schema: Mapping[str, Any] = err.schema if isinstance(err.schema, Mapping) else {}
    if err.validator == "required" and isinstance(err.instance, Mapping):
        properties = schema.get("properties", {})
        return [
            Problem((*path, key), f"must be {describe(properties.get(key, {}))}; it is missing")
            for key in typing.cast(list[str], err.validator_value)
            if key not in err.instance
        ]
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(str(key) for key in err.instance if key not in allowed)
        shown = repr(unknown) if len(unknown) <= 10 else repr(unknown[:10])[:-1] + ", …]"
        return [Problem(path, f"has unknown keys {shown}; allowed: {allowed}")]
    shown = _json_type(err.instance) if err.validator == "type" else _short(err.instance)
    return [Problem(path, f"must be {describe(schema)}, not {shown}")]


def describe(schema: Mapping[str, Any]) -> str:
    """What a value of ``schema`` is, in words: "a non-empty list of strings"."""
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(describe(s) for s in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(describe({**schema, "type": k}) for k in kind)
    return _describe_type(schema, kind)


def _describe_type(schema: Mapping[str, Any], kind: object) -> str:
    if kind == "string":
        text = "a non-empty string" if schema.get("minLength", 0) >= 1 else "a string"
        return f"{text} matching {schema['pattern']}" if "pattern" in schema else text
    if kind in ("integer", "number"):
        return ("an integer" if kind == "integer" else "a number") + _bounds(schema)
    if kind == "boolean":
        return "true or false"
    if kind == "null":
        return "null"
    if kind == "array":
        if "prefixItems" in schema:
            return f"a list of {len(schema['prefixItems'])} {_plural(schema['prefixItems'][0])}"
        text = "a non-empty list" if schema.get("minItems", 0) >= 1 else "a list"
        return f"{text} of {_plural(schema.get('items'))}"
    if kind == "object":
        values = schema.get("additionalProperties")
        return f"a mapping of {_plural(values)}" if isinstance(values, Mapping) else "a mapping"
    return "a value"


def _bounds(schema: Mapping[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if "exclusiveMinimum" in schema:
        return f" above {schema['exclusiveMinimum']}" + (f" and at most {high}" if high is not None else "")
    if low is not None:
        return f" of at least {low}"
    return f" of at most {high}" if high is not None else ""


_PLURALS = {
    "string": "strings",
    "integer": "integers",
    "number": "numbers",
    "boolean": "booleans",
    "object": "mappings",
    "array": "lists",
}


def _plural(schema: object) -> str:
    if not isinstance(schema, Mapping):
        return "values"
    kind = schema.get("type")
    if kind == "string" and schema.get("minLength", 0) >= 1:
        return "non-empty strings"
    return _PLURALS.get(kind, "values") if isinstance(kind, str) else "values"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in ((int, "an integer"), (float, "a number"), (str, "a string"), (Mapping, "a mapping")):
        if isinstance(value, kind):
            return name
    return "a list" if isinstance(value, list | tuple) else type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    """A value as shown in a message: hostile files hold long ones."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
