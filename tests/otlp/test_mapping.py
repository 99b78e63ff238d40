"""What the OTLP front end classifies in a request (message, source, opt-out) and how decisions
are written back into the LogRecords' attributes."""

from __future__ import annotations

import dataclasses
import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logclass import config
from logclass.config.settings import OtlpAttributeKey, OtlpOptOutCondition
from logclass.core.decision import Decision
from logclass.core.masking import TemplateMasker
from logclass.otlp.codec import decode_protobuf, encode_protobuf
from logclass.otlp.mapping import RecordMapping, extract, render, tag
from tests.otlp.test_codec import LIMITS

SETTINGS = config.load().otlp
MAPPING = RecordMapping.of(SETTINGS)


def s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def kv(key: str, value: AnyValue | str) -> KeyValue:
    return KeyValue(key=key, value=s(value) if isinstance(value, str) else value)


def kvlist(**values: AnyValue | str) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in values.items()]))


def resource_logs(resource: dict[str, str], *records: LogRecord, scope: dict[str, str] | None = None) -> ResourceLogs:
    scope_pb = InstrumentationScope(name="s", attributes=[kv(k, v) for k, v in (scope or {}).items()])
    return ResourceLogs(
        resource=Resource(attributes=[kv(k, v) for k, v in resource.items()]),
        scope_logs=[ScopeLogs(scope=scope_pb, log_records=list(records))],
    )


def rec(body: AnyValue | str | None, **attributes: str) -> LogRecord:
    record = LogRecord(attributes=[kv(k, v) for k, v in attributes.items()])
    if body is not None:
        record.body.CopyFrom(s(body) if isinstance(body, str) else body)
    return record


def sources_and_messages(request: ExportLogsServiceRequest, mapping: RecordMapping = MAPPING) -> list[tuple[str, str]]:
    return [(t.input.source, t.input.message) for t in extract(request, mapping).targets]


def test_the_defaults_are_the_documented_ones() -> None:
    assert [(k.level, k.key) for k in SETTINGS.source_keys] == [
        ("resource", "service.name"),
        ("resource", "k8s.deployment.name"),
        ("resource", "k8s.container.name"),
    ]
    assert (SETTINGS.message_key, SETTINGS.default_source, SETTINGS.enabled) == ("message", "otlp", False)
    assert (SETTINGS.grpc_listen, SETTINGS.http_listen) == ("127.0.0.1:4317", "127.0.0.1:4318")
    assert dataclasses.astuple(SETTINGS.attributes) == (
        "log.record.label",
        "log.record.confidence",
        "log.record.tier",
        "log.record.template.id",
        "log.record.template",
    )


def test_source_follows_the_configured_order_then_the_default() -> None:
    request = ExportLogsServiceRequest(
        resource_logs=[
            resource_logs(
                {"k8s.container.name": "c", "service.name": "checkout", "k8s.deployment.name": "d"}, rec("a")
            ),
            resource_logs({"k8s.container.name": "c", "k8s.deployment.name": "d"}, rec("b")),
            resource_logs({"k8s.container.name": "c", "service.name": ""}, rec("c")),
            resource_logs({"host.name": "h"}, rec("d")),
        ]
    )
    assert sources_and_messages(request) == [("checkout", "a"), ("d", "b"), ("c", "c"), ("otlp", "d")]


def test_record_attributes_do_not_override_by_default_but_can_be_listed_first() -> None:
    request = ExportLogsServiceRequest(
        resource_logs=[
            resource_logs(
                {"service.name": "api"},
                rec("x", **{"service.name": "spoofed"}),
                rec("y"),
                scope={"team": "payments"},
            )
        ]
    )
    assert sources_and_messages(request) == [("api", "x"), ("api", "y")]
    keys = (OtlpAttributeKey("record", "service.name"), OtlpAttributeKey("scope", "team"))
    mapping = dataclasses.replace(MAPPING, source_keys=keys)
    assert sources_and_messages(request, mapping) == [("spoofed", "x"), ("payments", "y")]


def test_a_non_string_source_attribute_is_skipped() -> None:
    request = ExportLogsServiceRequest(resource_logs=[resource_logs({}, rec("x"))])
    request.resource_logs[0].resource.attributes.extend(
        [KeyValue(key="service.name", value=AnyValue(int_value=7)), kv("k8s.container.name", "web")]
    )
    assert sources_and_messages(request) == [("web", "x")]


def test_message_from_string_map_bytes_and_other_bodies() -> None:
    records = [
        rec("plain line"),
        rec(kvlist(level="error", message="disk full on /var")),
        rec(kvlist(msg="no message key", code=AnyValue(int_value=3))),
        rec(AnyValue(bytes_value="café".encode())),
        rec(AnyValue(bytes_value=b"\xff\xfe")),
        rec(AnyValue(array_value=ArrayValue(values=[s("a"), AnyValue(double_value=2.5), AnyValue(bool_value=True)]))),
        rec(AnyValue(int_value=42)),
        rec(kvlist(message=AnyValue(int_value=5))),
        rec(""),
    ]
    request = ExportLogsServiceRequest(resource_logs=[resource_logs({"service.name": "api"}, *records)])
    messages = [message for _, message in sources_and_messages(request)]
    assert messages == [
        "plain line",
        "disk full on /var",
        '{"msg":"no message key","code":3}',
        "café",
        "\udcff\udcfe",  # surrogate escapes: the pipeline reports invalid_utf8
        '["a",2.5,true]',
        "42",
        "5",
        "",  # an empty string is a message: the pipeline reports empty_message
    ]


def test_the_message_key_is_configurable() -> None:
    request = ExportLogsServiceRequest(resource_logs=[resource_logs({}, rec(kvlist(log="from log", message="m")))])
    mapping = dataclasses.replace(MAPPING, message_key="log")
    assert sources_and_messages(request, mapping) == [("otlp", "from log")]


def test_records_without_a_body_are_missing_not_classified() -> None:
    bodyless = rec(None)
    request = ExportLogsServiceRequest(resource_logs=[resource_logs({}, bodyless, rec("x"))])
    extracted = extract(request, MAPPING)
    assert [t.input.message for t in extracted.targets] == ["x"]
    assert extracted.missing == [bodyless] and extracted.skipped == 0


def test_rendered_bodies_are_bounded_and_string_bodies_are_not_cut() -> None:
    huge_map = kvlist(data="x" * 5_000_000, more="y")
    huge_array = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=i) for i in range(100_000)]))
    huge_bytes = AnyValue(array_value=ArrayValue(values=[AnyValue(bytes_value=b"\x01" * 1_000_000)]))
    line = "z" * 3_000_000
    request = ExportLogsServiceRequest(
        resource_logs=[resource_logs({}, rec(huge_map), rec(huge_array), rec(huge_bytes), rec(line))]
    )
    messages = [t.input.message for t in extract(request, MAPPING).targets]
    assert [len(m) for m in messages] == [2048, 2048, 2048, 3_000_000]
    assert messages[0] == '{"data":"' + "x" * (2048 - 9)
    assert messages[1].startswith("[0,1,2,3,")
    assert messages[2].startswith('["AQEB')
    assert messages[3] == line  # a string (or bytes) body is the message: limits.max_message_bytes applies
    assert render(huge_map, 10) == '{"data":"x'


def test_opt_out_mirrors_the_relay_comparison() -> None:
    ann = "k8s.pod.annotations.logclass.io/classify"
    ns = "k8s.namespace.annotations.logclass.io/classify"
    request = ExportLogsServiceRequest(
        resource_logs=[
            resource_logs({"service.name": "a", ann: " False "}, rec("opted out by the pod")),
            resource_logs({"service.name": "b", ns: "false", ann: "true"}, rec("namespace wins")),
            resource_logs({"service.name": "c", ann: "true"}, rec("kept")),
            resource_logs({"service.name": "d", "k8s.pod.annotation.logclass.io/classify": "FALSE"}, rec("singular")),
            resource_logs({"service.name": "e", ann: "no"}, rec("kept too")),
        ]
    )
    extracted = extract(request, MAPPING)
    assert [(t.input.source, t.input.message) for t in extracted.targets] == [("c", "kept"), ("e", "kept too")]
    assert extracted.skipped == 3
    untouched = request.resource_logs[0].scope_logs[0].log_records[0]
    assert [a.key for a in untouched.attributes] == []


def test_opt_out_on_a_record_attribute_compares_booleans_as_text() -> None:
    condition = OtlpOptOutCondition("record", "logclass.classify", "false")
    mapping = RecordMapping.of(dataclasses.replace(SETTINGS, opt_out=(condition,)))
    off = rec("off")
    off.attributes.append(KeyValue(key="logclass.classify", value=AnyValue(bool_value=False)))
    on = rec("on")
    on.attributes.append(KeyValue(key="logclass.classify", value=AnyValue(bool_value=True)))
    request = ExportLogsServiceRequest(resource_logs=[resource_logs({}, off, on)])
    extracted = extract(request, mapping)
    assert [t.input.message for t in extracted.targets] == ["on"] and extracted.skipped == 1
    assert extract(request, dataclasses.replace(mapping, opt_out=())).skipped == 0


DECISION = Decision("Error", 0.912345, "embedding", "0123456789abcdef", "v1")


def attributes(record: LogRecord) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for pair in record.attributes:
        kind = pair.value.WhichOneof("value")
        out.append((pair.key, getattr(pair.value, kind) if kind else None))
    return out


def test_tag_writes_the_decision_and_replaces_existing_attributes() -> None:
    record = rec(
        "user 42 failed to log in",
        **{"log.record.template": "user <*> failed to log in", "log.record.label": "stale", "keep": "me"},
    )
    record.attributes.append(kv("log.record.label", "stale twice"))
    request = ExportLogsServiceRequest(resource_logs=[resource_logs({"service.name": "auth"}, record)])
    record = request.resource_logs[0].scope_logs[0].log_records[0]  # the request holds a copy
    extracted = extract(request, MAPPING)
    masker = TemplateMasker.from_config(dataclasses.asdict(m) for m in config.load().templates.masks)
    tag(extracted.targets, [DECISION], SETTINGS.attributes, masker.template)
    assert attributes(record) == [
        ("keep", "me"),
        ("log.record.label", "Error"),
        ("log.record.confidence", 0.9123),
        ("log.record.tier", "embedding"),
        ("log.record.template.id", "0123456789abcdef"),
        ("log.record.template", "user <NUM> failed to log in"),
    ]
    assert record.attributes[2].value.WhichOneof("value") == "double_value"
    # Tagging again (a retry) leaves one attribute per name.
    tag(extracted.targets, [DECISION], SETTINGS.attributes, masker.template)
    assert [k for k, _ in attributes(record)].count("log.record.label") == 1
    # And the tags survive the encoding.
    again = decode_protobuf(encode_protobuf(request), LIMITS).resource_logs[0].scope_logs[0].log_records[0]
    assert attributes(again) == attributes(record)


def test_tag_honours_names_and_nulls_and_drops_a_stale_template() -> None:
    names = dataclasses.replace(SETTINGS.attributes, label="class", confidence=None, template_id=None)
    record = rec("x", **{"log.record.template": "from drain", "log.record.confidence": "old"})
    request = ExportLogsServiceRequest(resource_logs=[resource_logs({}, record)])
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    no_template = Decision("Unclassified", 0.0, "pending", "", "v1")
    tag(extract(request, MAPPING).targets, [no_template], names)
    # confidence is not written, so an attribute of that name is not ours to touch.
    assert attributes(record) == [
        ("log.record.confidence", "old"),
        ("class", "Unclassified"),
        ("log.record.tier", "pending"),
    ]


def test_tag_needs_one_decision_per_target() -> None:
    request = ExportLogsServiceRequest(resource_logs=[resource_logs({}, rec("a"), rec("b"))])
    targets = extract(request, MAPPING).targets
    with pytest.raises(ValueError, match="shorter"):
        tag(targets, [DECISION], SETTINGS.attributes)


def test_targets_keep_request_order_across_resources_and_scopes() -> None:
    request = ExportLogsServiceRequest(
        resource_logs=[resource_logs({"service.name": "a"}, rec("1"), rec("2")), resource_logs({}, rec("3"))]
    )
    request.resource_logs[0].scope_logs.append(ScopeLogs(log_records=[rec("2b")]))
    assert sources_and_messages(request) == [("a", "1"), ("a", "2"), ("a", "2b"), ("otlp", "3")]
    assert json.dumps([m for _, m in sources_and_messages(request)]) == '["1", "2", "2b", "3"]'
