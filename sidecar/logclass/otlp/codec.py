"""OTLP logs requests (``ExportLogsServiceRequest``) from and to bytes: protobuf and OTLP/JSON.

Every byte comes from a sender, so decoding is bounded (``CodecLimits``, the ``otlp`` settings):
the request's size after gzip inflation (``inflate_gzip`` stops at the bound rather than inflating
a bomb), its log records, its AnyValues and their nesting. Whatever is wrong raises one
``OtlpRequestError``, whose message names the fault and the setting to change, and which says
how to answer it: gRPC INVALID_ARGUMENT / HTTP 400 for a malformed request, RESOURCE_EXHAUSTED /
413 for one past a size bound.

OTLP/JSON is the proto3 JSON mapping with the OTLP exceptions: keys are lowerCamelCase (the
proto names are accepted too), ``traceId`` and ``spanId`` are hex rather than base64, enums are
integers, 64-bit integers may be strings or numbers, and unknown fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from logclass.config.settings import OtlpSettings
from logclass.errors import LogclassError

# The proto3 JSON decoder's bound on nested messages, as protobuf's binary decoder (upb) has it.
# An AnyValue level is three messages deep (AnyValue, KeyValueList, KeyValue), so otlp.max_value_depth
# (at most 32) is checked after decoding, on the decoded request.
MAX_MESSAGE_NESTING = 100
TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
# The JSON keys of the ids (lowerCamelCase, and the proto names the decoder accepts too).
_ID_KEYS = {"traceId": TRACE_ID_BYTES, "trace_id": TRACE_ID_BYTES, "spanId": SPAN_ID_BYTES, "span_id": SPAN_ID_BYTES}
_ARRAY_KEYS = (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records"))


class OtlpRequestError(LogclassError):
    """An OTLP request that cannot be taken; ``too_large``: past a size bound (gRPC
    RESOURCE_EXHAUSTED, HTTP 413), else malformed (INVALID_ARGUMENT, 400). Neither is worth
    retrying unchanged."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED if self.too_large else grpc.StatusCode.INVALID_ARGUMENT

    @property
    def http_status(self) -> int:
        return 413 if self.too_large else 400


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """What one request may hold (the ``otlp`` settings of the same names)."""

    max_request_bytes: int
    max_records: int
    max_values: int
    max_value_depth: int

    @classmethod
    def of(cls, settings: OtlpSettings) -> CodecLimits:
        return cls(
            settings.max_request_bytes,
            settings.max_records_per_request,
            settings.max_values_per_request,
            settings.max_value_depth,
        )


def inflate_gzip(data: bytes, max_bytes: int) -> bytes:
    """The content of a gzip body (one or more members); stops, and raises, as soon as the
    output would pass ``max_bytes``: a bomb costs ``max_bytes`` of inflation at most."""
    out: list[bytes] = []
    size = 0
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            chunk = inflater.decompress(data, max_bytes - size + 1)
        except zlib.error as exc:
            raise OtlpRequestError(f"the request body is not valid gzip: {exc}") from exc
        size += len(chunk)
        if size > max_bytes:
            raise _too_many_bytes(max_bytes, "inflates past")
        if not inflater.eof:
            raise OtlpRequestError("the gzip request body ends inside a member (truncated)")
        out.append(chunk)
        data = inflater.unused_data
    return b"".join(out)


def decode_protobuf(data: bytes, limits: CodecLimits) -> ExportLogsServiceRequest:
    """A request from OTLP protobuf bytes (already inflated), checked against ``limits``."""
    _check_size(data, limits)
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise OtlpRequestError(
            f"the request is not a valid OTLP ExportLogsServiceRequest in protobuf ({exc}): truncated, not "
            f"protobuf, or nested deeper than protobuf's {MAX_MESSAGE_NESTING} messages"
        ) from exc
    check(request, limits)
    return request


def decode_json(data: bytes, limits: CodecLimits) -> ExportLogsServiceRequest:
    """A request from OTLP/JSON bytes (already inflated; UTF-8), checked against ``limits``."""
    _check_size(data, limits)
    try:
        document = json.loads(data)
    except RecursionError:
        raise OtlpRequestError("the OTLP/JSON request nests too deeply to read") from None
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise OtlpRequestError(f"the request is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise OtlpRequestError(f"an OTLP/JSON request is an object, got {_json_type(document)}")
    _shape(document)
    _ids_to_base64(document)
    request = ExportLogsServiceRequest()
    try:
        json_format.ParseDict(document, request, max_recursion_depth=MAX_MESSAGE_NESTING)
    except RecursionError:
        raise OtlpRequestError("the OTLP/JSON request nests too deeply to read") from None
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise OtlpRequestError(f"the request is not a valid OTLP/JSON ExportLogsServiceRequest: {exc}") from exc
    check(request, limits)
    return request


def encode_protobuf(request: ExportLogsServiceRequest) -> bytes:
    data: bytes = request.SerializeToString()
    return data


def encode_json(request: ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON: lowerCamelCase keys, hex ids, integer enums, 64-bit integers as strings."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    _ids_to_hex(document)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check(request: ExportLogsServiceRequest, limits: CodecLimits) -> None:
    """Raises OtlpRequestError when ``request`` holds more records or AnyValues than ``limits``
    allow, an AnyValue nested deeper, or an id of the wrong length."""
    records = sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)
    if records > limits.max_records:
        raise OtlpRequestError(
            f"the request holds {records:,} log records, more than otlp.max_records_per_request "
            f"({limits.max_records:,}); raise it or send smaller batches",
            too_large=True,
        )
    counter = _ValueCounter(limits)
    for resource in request.resource_logs:
        counter.attributes(resource.resource.attributes)
        for scope in resource.scope_logs:
            counter.attributes(scope.scope.attributes)
            for record in scope.log_records:
                _check_ids(record.trace_id, record.span_id)
                if record.HasField("body"):
                    counter.value(record.body)
                counter.attributes(record.attributes)


class _ValueCounter:
    """Counts the AnyValues of a request against otlp.max_values_per_request and measures their
    depth against otlp.max_value_depth, without recursion (a stack of (value, depth))."""

    __slots__ = ("limits", "used")

    def __init__(self, limits: CodecLimits) -> None:
        self.limits = limits
        self.used = 0

    def attributes(self, attributes: Any) -> None:
        for pair in attributes:
            self.value(pair.value)

    def value(self, top: AnyValue) -> None:
        stack: list[tuple[AnyValue, int]] = [(top, 1)]
        while stack:
            value, depth = stack.pop()
            self.used += 1
            if self.used > self.limits.max_values:
                raise OtlpRequestError(
                    f"the request holds more than otlp.max_values_per_request ({self.limits.max_values:,}) "
                    "attribute values, bodies and their elements; raise it or send smaller batches",
                    too_large=True,
                )
            kind = value.WhichOneof("value")
            if kind == "array_value":
                children: list[AnyValue] = list(value.array_value.values)
            elif kind == "kvlist_value":
                children = [pair.value for pair in value.kvlist_value.values]
            else:
                continue
            if children and depth + 1 > self.limits.max_value_depth:
                raise OtlpRequestError(
                    "an attribute value or body nests deeper than otlp.max_value_depth "
                    f"({self.limits.max_value_depth}) levels of arrays and maps"
                )
            stack.extend((child, depth + 1) for child in children)


def _check_size(data: bytes, limits: CodecLimits) -> None:
    if len(data) > limits.max_request_bytes:
        raise _too_many_bytes(limits.max_request_bytes, "is larger than")


def _too_many_bytes(limit: int, verb: str) -> OtlpRequestError:
    return OtlpRequestError(
        f"the request {verb} otlp.max_request_bytes ({limit:,} bytes); raise it or send smaller batches",
        too_large=True,
    )


def _check_ids(trace_id: bytes, span_id: bytes) -> None:
    for name, value, size in (("trace_id", trace_id, TRACE_ID_BYTES), ("span_id", span_id, SPAN_ID_BYTES)):
        if value and len(value) != size:
            raise OtlpRequestError(f"a log record's {name} has {len(value)} bytes; it has {size}, or is empty")


def _shape(document: dict[str, Any]) -> None:
    """Drops the keys OTLP/JSON does not know (a newer sender's fields are ignored, as the spec
    asks) and checks that every message field holds an object and every repeated one an array,
    in place. json_format's own ``ignore_unknown_fields`` cannot be used for the first: it also
    ignores a string where an object belongs (reading its characters as unknown keys)."""
    stack: list[tuple[dict[str, Any], Any, _Path]] = [(document, ExportLogsServiceRequest.DESCRIPTOR, None)]
    while stack:
        obj, descriptor, path = stack.pop()
        fields = _json_fields(descriptor)
        for key in list(obj):
            fd = fields.get(key)
            if fd is None:
                del obj[key]
                continue
            value = obj[key]
            if fd.message_type is None or value is None:
                continue  # scalars and enums: json_format checks them; null is the default
            if fd.is_repeated and not isinstance(value, list):
                raise OtlpRequestError(f"{_where(path, key)} is an array, got {_json_type(value)}")
            for i, item in enumerate(value) if fd.is_repeated else ((None, value),):
                here = (path, key, i)
                if not isinstance(item, dict):
                    raise OtlpRequestError(f"{_where(*here)} is an object, got {_json_type(item)}")
                stack.append((item, fd.message_type, here))


# Where a JSON value is, built only for an error message: (parent, key, index in an array).
_Path = tuple[Any, str, int | None] | None
_FIELDS: dict[str, dict[str, Any]] = {}


def _where(parent: _Path, key: str, index: int | None = None) -> str:
    text = key if index is None else f"{key}[{index}]"
    while parent is not None:
        parent, key, index = parent
        text = (key if index is None else f"{key}[{index}]") + "." + text
    return text


def _json_fields(descriptor: Any) -> dict[str, Any]:
    """A message's fields by their JSON names and proto names."""
    fields = _FIELDS.get(descriptor.full_name)
    if fields is None:
        fields = {fd.json_name: fd for fd in descriptor.fields} | {fd.name: fd for fd in descriptor.fields}
        _FIELDS[descriptor.full_name] = fields
    return fields


def _records_json(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The log record objects of an OTLP/JSON document, read as far as they are well formed
    (the proto decoder reports the rest)."""
    level: list[Any] = [document]
    for keys in _ARRAY_KEYS:
        found: list[Any] = []
        for parent in level:
            if not isinstance(parent, dict):
                continue
            items = next((parent[k] for k in keys if k in parent), None)
            if isinstance(items, list):
                found.extend(items)
        level = found
    return [record for record in level if isinstance(record, dict)]


def _ids_to_base64(document: dict[str, Any]) -> None:
    """Turns the hex ids of OTLP/JSON into the proto3 JSON mapping's base64, in place."""
    for record in _records_json(document):
        for key, size in _ID_KEYS.items():
            if key in record:
                record[key] = base64.b64encode(_hex_id(record[key], key, size)).decode("ascii")


def _hex_id(value: object, key: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise OtlpRequestError(f"a log record's {key} is a hex string, got {_json_type(value)}")
    if value == "":
        return b""
    if len(value) != 2 * size:
        raise OtlpRequestError(f"a log record's {key} has {len(value)} hex digits; it has {2 * size}, or is empty")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise OtlpRequestError(f"a log record's {key} is not hex: {value[:64]!r}") from None


def _ids_to_hex(document: dict[str, Any]) -> None:
    for record in _records_json(document):
        for key in ("traceId", "spanId"):
            if key in record:
                record[key] = binascii.hexlify(base64.b64decode(record[key])).decode("ascii")


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
