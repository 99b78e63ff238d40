"""Generates ``schema.json`` (JSON Schema, Draft 2020-12) from the types in ``settings``.

``python -m logclass.config.schema_gen`` (``make schema``) rewrites the file; a test fails when the
file differs from what the types give, so the schema cannot drift from the code that reads it.
Every field is required and no other key is allowed, except the ``MayOmit`` keys of list items.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from logclass.config.settings import Json, MayOmit, Settings, field_types, is_union, split_annotated

DRAFT = "https://json-schema.org/draft/2020-12/schema"
COMMAND = "make schema (python -m logclass.config.schema_gen)"
SCHEMA_FILE = Path(__file__).resolve().with_name("schema.json")
_PRIMITIVES: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


def generate() -> dict[str, Any]:
    return {"$schema": DRAFT, "title": "logclass configuration", **schema_of(Settings)}


def render() -> str:
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


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
        return {"type": "array", "items": schema_of(typing.get_args(tp)[0])}
    if origin is Mapping or origin is dict:
        return {"type": "object", "additionalProperties": schema_of(typing.get_args(tp)[1])}
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    raise TypeError(f"no JSON Schema for {tp!r}: use bool, int, float, str, Literal, tuple, Mapping or a dataclass")


def _object(cls: type[Any]) -> dict[str, Any]:
    hints = field_types(cls)
    required = [name for name, tp in hints.items() if not any(isinstance(m, MayOmit) for m in split_annotated(tp)[1])]
    out: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if required:
        out["required"] = required
    out["properties"] = {name: schema_of(tp) for name, tp in hints.items()}
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


def check(path: Path = SCHEMA_FILE) -> str | None:
    """None when ``path`` holds the generated schema, else what to do about it."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == render():
        return None
    return f"{path} is stale: it differs from the types in logclass.config.settings; run {COMMAND}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        problem = check()
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
