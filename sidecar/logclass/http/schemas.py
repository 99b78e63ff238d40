"""Pydantic models of the proto messages, made from their descriptors: the OpenAPI document and
request validation follow the .proto, so gRPC and HTTP share one contract that cannot drift.

Field names are the proto3 JSON names (lowerCamelCase, as gRPC-JSON transcoding writes them);
the original snake_case names are accepted too, as proto3 JSON parsers must."""

from __future__ import annotations

import binascii
import json
from importlib.resources import files
from typing import TYPE_CHECKING, Annotated, Any, Literal

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from logclass.api.logclass.v1 import classifier_pb2 as pb

_UINT32_MAX = 2**32 - 1


def _base64(value: str) -> str:
    """Standard or URL-safe base64, padding optional (as proto3 JSON allows); protobuf's own
    parser would silently drop stray characters instead."""
    standard = value.replace("-", "+").replace("_", "/")
    try:
        binascii.a2b_base64(standard + "=" * (-len(standard) % 4), strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64 ({exc})") from exc
    return value


_SCALARS: dict[int, Any] = {
    FieldDescriptor.TYPE_STRING: str,
    FieldDescriptor.TYPE_BOOL: bool,
    FieldDescriptor.TYPE_FLOAT: float,
    FieldDescriptor.TYPE_DOUBLE: float,
    FieldDescriptor.TYPE_UINT32: Annotated[int, Field(ge=0, le=_UINT32_MAX)],
    FieldDescriptor.TYPE_INT32: Annotated[int, Field(ge=-(2**31), le=2**31 - 1)],
    # proto3 JSON writes bytes as base64 text.
    FieldDescriptor.TYPE_BYTES: Annotated[str, AfterValidator(_base64), Field(json_schema_extra={"format": "byte"})],
}
_EMPTY: dict[int, Any] = {
    FieldDescriptor.TYPE_STRING: "",
    FieldDescriptor.TYPE_BYTES: "",
    FieldDescriptor.TYPE_BOOL: False,
    FieldDescriptor.TYPE_FLOAT: 0.0,
    FieldDescriptor.TYPE_DOUBLE: 0.0,
    FieldDescriptor.TYPE_UINT32: 0,
    FieldDescriptor.TYPE_INT32: 0,
}
_CONFIG = ConfigDict(populate_by_name=True, extra="forbid")
# The .proto's comments by full name (written by `make proto`): the API documents itself alike
# in both transports.
_DOCS: dict[str, str] = json.loads((files(pb.__package__) / "classifier_docs.json").read_text(encoding="utf-8"))


def _enum_docs(enum: Any) -> dict[str, str]:
    return {v.name: _DOCS.get(f"{enum.full_name}.{v.name}", "") for v in enum.values}


def _value_type(field: FieldDescriptor, models: dict[str, type[BaseModel]]) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_model(field.message_type, models)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return Annotated[
            Literal[tuple(value.name for value in field.enum_type.values)],
            Field(json_schema_extra={"x-enum-descriptions": _enum_docs(field.enum_type)}),  # type: ignore[dict-item]
        ]
    if field.type not in _SCALARS:
        raise TypeError(f"{field.full_name}: proto type {field.type} has no JSON model here; add it to _SCALARS")
    return _SCALARS[field.type]


def _field(field: FieldDescriptor, models: dict[str, type[BaseModel]]) -> tuple[Any, Any]:
    """The field's type and its pydantic Field: proto3 JSON name, proto comment, proto default."""
    named = {"alias": field.json_name, "title": field.json_name, "description": _DOCS.get(field.full_name)}
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value: Any = _value_type(entry.fields_by_name["value"], models)
        return dict[str, value], Field(default_factory=dict, **named)
    kind: Any = _value_type(field, models)
    if field.is_repeated:
        return list[kind], Field(default_factory=list, **named)
    if field.has_presence:
        return kind | None, Field(default=None, **named)
    default = field.enum_type.values[0].name if field.enum_type is not None else _EMPTY[field.type]
    return kind, Field(default=default, **named)


def message_model(descriptor: Descriptor, models: dict[str, type[BaseModel]] | None = None) -> type[BaseModel]:
    """The model of one message (and, through ``models``, each message it contains, made once)."""
    models = {} if models is None else models
    if descriptor.full_name not in models:
        fields: dict[str, Any] = {str(field.name): _field(field, models) for field in descriptor.fields}
        models[descriptor.full_name] = create_model(
            str(descriptor.name), __config__=_CONFIG, __doc__=_DOCS.get(descriptor.full_name), **fields
        )
    return models[descriptor.full_name]


if TYPE_CHECKING:
    # For the type checker these are plain models; at run time they carry the proto's fields.
    ClassifyRequestJson = BaseModel
    ClassifyResponseJson = BaseModel
    ModelInfoJson = BaseModel
else:
    _MODELS: dict[str, type[BaseModel]] = {}
    ClassifyRequestJson = message_model(pb.ClassifyRequest.DESCRIPTOR, _MODELS)
    ClassifyResponseJson = message_model(pb.ClassifyResponse.DESCRIPTOR, _MODELS)
    ModelInfoJson = message_model(pb.ModelInfo.DESCRIPTOR, _MODELS)


class Status(BaseModel):
    """Every error body: google.rpc.Status in JSON, as gRPC-JSON transcoding writes a failed call."""

    code: int = Field(description="google.rpc.Code, e.g. 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 16 UNAUTHENTICATED")
    message: str = Field(description="what was wrong, and what to change")
    details: list[dict[str, Any]] = Field(default_factory=list)


class Health(BaseModel):
    status: Literal["SERVING", "NOT_SERVING"] = Field(description="as gRPC health reports it")


class RecordCount(BaseModel):
    tier: str
    label: str
    count: float


class LaneLoad(BaseModel):
    lane: str
    queued: float = Field(description="templates waiting for the lane's tier")
    running: float = Field(description="templates the tier is working on")


class ErrorCount(BaseModel):
    kind: str
    count: float


class CacheCounts(BaseModel):
    exact: float = Field(0.0, description="records answered by the exact-message cache")
    template: float = Field(0.0, description="records answered by the template cache")
    miss: float = Field(0.0, description="templates the model tiers decided")


class Stats(BaseModel):
    """Cumulative counters since the sidecar started (the ones /metrics exports): poll and take
    differences for rates."""

    uptimeSeconds: float
    records: list[RecordCount]
    cache: CacheCounts
    lanes: list[LaneLoad]
    inflightTemplates: float
    errors: list[ErrorCount]
