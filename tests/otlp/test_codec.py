"""The OTLP request codec: protobuf and OTLP/JSON both ways, and every bound a sender could
push against (size after gzip, records, values, nesting, ids), each refused with the error that
names it and the status it maps to."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logclass import config
from logclass.errors import LogclassError
from logclass.otlp.codec import (
    CodecLimits,
    OtlpRequestError,
    check,
    decode_json,
    decode_protobuf,
    encode_json,
    encode_protobuf,
    inflate_gzip,
)

LIMITS = CodecLimits(max_request_bytes=1 << 20, max_records=100, max_values=1000, max_value_depth=8)
TRACE = bytes(range(16))
SPAN = bytes(range(8))


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def request(*bodies: AnyValue, service: str = "checkout") -> ExportLogsServiceRequest:
    records = [
        LogRecord(
            time_unix_nano=1_700_000_000_123_456_789 + i,
            observed_time_unix_nano=1_700_000_000_200_000_000,
            severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR,
            severity_text="ERROR",
            body=body,
            attributes=[_kv("http.status_code", AnyValue(int_value=503)), _kv("retry", AnyValue(bool_value=True))],
            trace_id=TRACE,
            span_id=SPAN,
            flags=1,
        )
        for i, body in enumerate(bodies)
    ]
    resource = Resource(attributes=[_kv("service.name", AnyValue(string_value=service))])
    scope = InstrumentationScope(name="app.logger", version="1.2")
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(scope=scope, log_records=records)])]
    )


def nested(depth: int) -> AnyValue:
    """A map in a map ... ``depth`` levels in all (a string is depth 1)."""
    value = AnyValue(string_value="leaf")
    for _ in range(depth - 1):
        value = AnyValue(kvlist_value=KeyValueList(values=[_kv("k", value)]))
    return value


SAMPLE = request(
    AnyValue(string_value="payment gateway timeout after 3000 ms"),
    AnyValue(kvlist_value=KeyValueList(values=[_kv("message", AnyValue(string_value="user 42 logged in"))])),
    AnyValue(array_value=ArrayValue(values=[AnyValue(double_value=1.5), AnyValue(bytes_value=b"\x00\xff")])),
)


def test_protobuf_round_trip() -> None:
    data = encode_protobuf(SAMPLE)
    decoded = decode_protobuf(data, LIMITS)
    assert decoded == SAMPLE
    assert encode_protobuf(decoded) == data
    record = decoded.resource_logs[0].scope_logs[0].log_records[1]
    assert record.body.kvlist_value.values[0].value.string_value == "user 42 logged in"


def test_json_round_trip_uses_the_otlp_mapping() -> None:
    data = encode_json(SAMPLE)
    document = json.loads(data)
    record = document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    # lowerCamelCase keys, hex ids (not base64), enums as integers, 64-bit integers as strings.
    assert record["traceId"] == TRACE.hex() and record["spanId"] == SPAN.hex()
    assert record["severityNumber"] == SeverityNumber.SEVERITY_NUMBER_ERROR == 17
    assert record["timeUnixNano"] == "1700000000123456789"
    assert record["attributes"][0] == {"key": "http.status_code", "value": {"intValue": "503"}}
    assert decode_json(data, LIMITS) == SAMPLE


def test_json_accepts_numbers_for_64_bit_integers_and_ignores_unknown_fields() -> None:
    document = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                "futureField": {"anything": [1, 2]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": 1700000000000000000,
                                "severityNumber": 9,
                                "body": {"stringValue": "GET /health 200"},
                                "attributes": [{"key": "n", "value": {"intValue": 7}}],
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    decoded = decode_json(json.dumps(document).encode(), LIMITS)
    record = decoded.resource_logs[0].scope_logs[0].log_records[0]
    assert record.time_unix_nano == 1_700_000_000_000_000_000
    assert record.severity_number == SeverityNumber.SEVERITY_NUMBER_INFO
    assert record.body.string_value == "GET /health 200"
    assert record.attributes[0].value.int_value == 7
    assert record.trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")
    assert record.span_id == bytes.fromhex("eee19b7ec3c1b174")


def test_empty_ids_are_allowed_both_ways() -> None:
    plain = request(AnyValue(string_value="x"))
    record = plain.resource_logs[0].scope_logs[0].log_records[0]
    record.trace_id, record.span_id = b"", b""
    assert decode_json(encode_json(plain), LIMITS) == plain
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "", "spanId": ""}]}]}]}
    assert (
        decode_json(json.dumps(document).encode(), LIMITS).resource_logs[0].scope_logs[0].log_records[0].trace_id == b""
    )


def test_the_error_derives_from_the_base_and_maps_to_statuses() -> None:
    malformed, too_large = OtlpRequestError("x"), OtlpRequestError("y", too_large=True)
    assert isinstance(malformed, LogclassError)
    assert (malformed.grpc_status, malformed.http_status) == (grpc.StatusCode.INVALID_ARGUMENT, 400)
    assert (too_large.grpc_status, too_large.http_status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)


def _refused(call: Any, *args: Any, too_large: bool, match: str) -> OtlpRequestError:
    with pytest.raises(OtlpRequestError, match=match) as caught:
        call(*args)
    assert caught.value.too_large is too_large
    return caught.value


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (encode_protobuf(SAMPLE)[:-7], "not a valid OTLP ExportLogsServiceRequest in protobuf"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "not a valid OTLP ExportLogsServiceRequest in protobuf"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a valid OTLP ExportLogsServiceRequest in protobuf"),
    ],
    ids=["truncated", "varint-garbage", "http-text"],
)
def test_garbage_protobuf_is_invalid_argument(data: bytes, match: str) -> None:
    _refused(decode_protobuf, data, LIMITS, too_large=False, match=match)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b'{"resourceLogs": [', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", "an OTLP/JSON request is an object, got an array"),
        (b'"resourceLogs"', "an OTLP/JSON request is an object, got a string"),
        (b'{"resourceLogs": "many"}', "resourceLogs is an array, got a string"),
        (b'{"resourceLogs": [{"resource": 5}]}', r"resourceLogs\[0\]\.resource is an object, got a number"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{}, {"body": "text"}]}]}]}',
            r"resourceLogs\[0\]\.scopeLogs\[0\]\.logRecords\[1\]\.body is an object, got a string",
        ),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": ["x"]}]}]}', r"logRecords\[0\] is an object, got a string"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": {"k": "v"}}]}]}]}',
            r"logRecords\[0\]\.attributes is an array, got an object",
        ),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}', "not a valid OTLP/JSON"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": "LOUD"}]}]}]}', "not a valid OTLP/JSON"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": 5}}]}]}]}',
            "Failed to parse stringValue field",
        ),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": 12}]}]}]}', "traceId is a hex string, got a"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"spanId": "zzzzzzzzzzzzzzzz"}]}]}]}', "spanId is not hex"),
    ],
    ids=[
        "cut",
        "not-utf8",
        "array",
        "string",
        "list-as-string",
        "resource-as-number",
        "body-as-string",
        "record-as-string",
        "attributes-as-object",
        "time-as-word",
        "enum-unknown-name",
        "string-as-number",
        "id-as-number",
        "id-not-hex",
    ],
)
def test_bad_json_is_invalid_argument(text: bytes, match: str) -> None:
    _refused(decode_json, text, LIMITS, too_large=False, match=match)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("traceId", "5b8efff798038103d269b633813fc6", "traceId has 30 hex digits; it has 32, or is empty"),
        ("traceId", "5b8efff798038103d269b633813fc60c00", "traceId has 34 hex digits"),
        ("spanId", "eee19b7ec3c1b1", "spanId has 14 hex digits; it has 16, or is empty"),
        # The proto3 JSON mapping's base64 of 16 bytes is 24 characters: not OTLP's hex.
        ("traceId", base64.b64encode(TRACE).decode(), "traceId has 24 hex digits"),
    ],
)
def test_json_ids_of_the_wrong_length_are_refused(key: str, value: str, match: str) -> None:
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{key: value, "body": {"stringValue": "x"}}]}]}]}
    _refused(decode_json, json.dumps(document).encode(), LIMITS, too_large=False, match=match)


def test_protobuf_ids_of_the_wrong_length_are_refused() -> None:
    bad = request(AnyValue(string_value="x"))
    bad.resource_logs[0].scope_logs[0].log_records[0].trace_id = b"\x01" * 15
    _refused(decode_protobuf, encode_protobuf(bad), LIMITS, too_large=False, match="trace_id has 15 bytes; it has 16")
    bad.resource_logs[0].scope_logs[0].log_records[0].trace_id = TRACE
    bad.resource_logs[0].scope_logs[0].log_records[0].span_id = b"\x01" * 9
    _refused(decode_protobuf, encode_protobuf(bad), LIMITS, too_large=False, match="span_id has 9 bytes; it has 8")


def test_gzip_inflates_concatenated_members() -> None:
    data = encode_protobuf(SAMPLE)
    body = gzip.compress(data[:10]) + gzip.compress(data[10:])
    assert decode_protobuf(inflate_gzip(body, LIMITS.max_request_bytes), LIMITS) == SAMPLE


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\x00" * (10 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 20_000
    seen: list[int] = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self, wbits: int) -> None:
            self.inner = real(wbits=wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self.inner.decompress(data, max_length)
            seen.append(len(out))
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("logclass.otlp.codec.zlib.decompressobj", Spy)
        error = _refused(inflate_gzip, bomb, 65536, too_large=True, match=r"inflates past otlp.max_request_bytes")
    assert "65,536 bytes" in str(error)
    assert seen == [65537]  # one bounded step: the other 10 MB were never inflated


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(b"x" * 1000)[:-12], "ends inside a member"),
    ],
)
def test_broken_gzip_is_invalid_argument(body: bytes, match: str) -> None:
    _refused(inflate_gzip, body, 1 << 20, too_large=False, match=match)


def test_a_request_larger_than_the_limit_is_refused_before_decoding() -> None:
    small = CodecLimits(max_request_bytes=1024, max_records=100, max_values=1000, max_value_depth=8)
    big = request(AnyValue(string_value="x" * 2000))
    _refused(
        decode_protobuf, encode_protobuf(big), small, too_large=True, match=r"is larger than otlp.max_request_bytes"
    )
    _refused(decode_json, encode_json(big), small, too_large=True, match=r"otlp.max_request_bytes \(1,024 bytes\)")


def test_too_many_records_across_resources_and_scopes() -> None:
    many = request(*[AnyValue(string_value=f"line {i}") for i in range(60)])
    many.resource_logs.append(many.resource_logs[0])  # 120 records in two resources
    error = _refused(
        decode_protobuf, encode_protobuf(many), LIMITS, too_large=True, match="otlp.max_records_per_request"
    )
    assert "holds 120 log records" in str(error) and "(100)" in str(error)
    check(request(*[AnyValue(string_value="x")] * 100), LIMITS)  # exactly at the limit passes


def test_too_many_values_counts_nested_elements_and_resource_attributes() -> None:
    limits = CodecLimits(max_request_bytes=1 << 20, max_records=100, max_values=50, max_value_depth=8)
    array = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=i) for i in range(60)]))
    _refused(check, request(array), limits, too_large=True, match=r"otlp.max_values_per_request \(50\)")
    # 1 record: body 1 + 2 attributes + 1 resource attribute = 4 values
    check(request(AnyValue(string_value="x")), CodecLimits(1 << 20, 100, 4, 8))
    _refused(
        check, request(AnyValue(string_value="x")), CodecLimits(1 << 20, 100, 3, 8), too_large=True, match="max_values"
    )


def test_depth_at_the_limit_passes_and_one_more_is_refused() -> None:
    check(request(nested(8)), LIMITS)
    error = _refused(
        check, request(nested(9)), LIMITS, too_large=False, match=r"deeper than otlp.max_value_depth \(8\)"
    )
    assert error.http_status == 400
    # The same in an attribute, in JSON.
    deep = request(AnyValue(string_value="x"))
    deep.resource_logs[0].scope_logs[0].log_records[0].attributes.append(_kv("ctx", nested(9)))
    _refused(decode_json, encode_json(deep), LIMITS, too_large=False, match="otlp.max_value_depth")


def _deep_json(levels: int) -> bytes:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(levels):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": value}]}]}]}).encode()


def test_200_nested_maps_are_refused_in_both_encodings() -> None:
    # protobuf: built by hand on the wire, as the Python classes would recurse building it.
    leaf = AnyValue(string_value="leaf").SerializeToString()
    value = leaf
    for _ in range(200):
        pair = b"\x0a\x01k" + b"\x12" + _varint(len(value)) + value  # KeyValue{key, value}
        kvlist = b"\x0a" + _varint(len(pair)) + pair  # KeyValueList{values}
        value = b"\x32" + _varint(len(kvlist)) + kvlist  # AnyValue{kvlist_value = 6}
    record = b"\x2a" + _varint(len(value)) + value  # LogRecord{body = 5}
    scope = b"\x12" + _varint(len(record)) + record  # ScopeLogs{log_records = 2}
    resource = b"\x12" + _varint(len(scope)) + scope  # ResourceLogs{scope_logs = 2}
    data = b"\x0a" + _varint(len(resource)) + resource  # ExportLogsServiceRequest{resource_logs = 1}
    _refused(decode_protobuf, data, LIMITS, too_large=False, match="nested deeper than protobuf's 100 messages")
    _refused(decode_json, _deep_json(200), LIMITS, too_large=False, match="not a valid OTLP/JSON.*too deep")
    # And JSON far deeper than any parser's stack.
    _refused(decode_json, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, LIMITS, too_large=False, match="too deeply")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_limits_come_from_the_otlp_settings() -> None:
    limits = CodecLimits.of(config.load().otlp)
    assert limits == CodecLimits(max_request_bytes=4194304, max_records=10000, max_values=262144, max_value_depth=16)
