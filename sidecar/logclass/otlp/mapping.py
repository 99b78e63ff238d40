"""From OTLP LogRecords to the engine's records, and the engine's decisions back into them.

``extract`` reads what to classify from each LogRecord of a decoded request:

- the message: a string body; of a map (kvlist) body, the value at ``otlp.message_key``; any
  other body as its compact JSON text, cut to ``otlp.max_rendered_body_chars``. A string body is
  never cut: past ``limits.max_message_bytes`` the pipeline answers message_too_long, as for
  every front end. Bytes are read as UTF-8 (invalid_utf8 otherwise). A record without a body has
  no message: it is listed in ``Extracted.missing`` and left as it came.
- the source: the first non-empty string among ``otlp.source_keys``, each an attribute of the
  resource, the instrumentation scope or the LogRecord, in the order given (the defaults read
  the resource only); none holds one: ``otlp.default_source``.
- the opt-out: a record matching any ``otlp.opt_out`` condition (the attribute's value as text
  equals ``equals``, ignoring case and surrounding spaces, as the relay's opt-out compares) is
  not classified and passes untouched.

``tag`` writes one decision per record into its attributes under ``otlp.attributes``' names,
replacing attributes of those names the record already had (the Collector's drain processor
writes ``log.record.template`` too): no name appears twice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as OtlpLogRecord

from logclass.config.settings import OtlpAttributeKey, OtlpAttributesSettings, OtlpSettings
from logclass.core.decision import Decision, LogRecord

LEVELS = ("resource", "scope", "record")


@dataclass(frozen=True, slots=True)
class OptOut:
    """One ``otlp.opt_out`` condition; ``equals`` already stripped and case-folded."""

    level: str
    key: str
    equals: str

    def matches(self, value: AnyValue | None) -> bool:
        text = None if value is None else scalar_text(value)
        return text is not None and text.strip().casefold() == self.equals


@dataclass(frozen=True, slots=True)
class RecordMapping:
    """The ``otlp`` settings that say what to classify and where decisions go."""

    message_key: str
    max_rendered_body_chars: int
    source_keys: tuple[OtlpAttributeKey, ...]
    default_source: str
    opt_out: tuple[OptOut, ...]
    names: OtlpAttributesSettings

    @classmethod
    def of(cls, settings: OtlpSettings) -> RecordMapping:
        return cls(
            message_key=settings.message_key,
            max_rendered_body_chars=settings.max_rendered_body_chars,
            source_keys=settings.source_keys,
            default_source=settings.default_source,
            opt_out=tuple(OptOut(c.level, c.key, c.equals.strip().casefold()) for c in settings.opt_out),
            names=settings.attributes,
        )

    def wanted(self, level: str) -> frozenset[str]:
        """The attribute keys of ``level`` the source and the opt-out read."""
        keys = [k.key for k in self.source_keys if k.level == level]
        keys += [c.key for c in self.opt_out if c.level == level]
        return frozenset(keys)


@dataclass(frozen=True, slots=True)
class Target:
    """A LogRecord to classify (tagged in place) and what the engine is asked about it."""

    record: OtlpLogRecord
    input: LogRecord


@dataclass(slots=True)
class Extracted:
    """A request's records to classify, in request order; the records opted out (counted) and
    those without a body (left as they came)."""

    targets: list[Target] = field(default_factory=list)
    skipped: int = 0
    missing: list[OtlpLogRecord] = field(default_factory=list)


class _Lookup:
    """The attributes the mapping reads, per level: first occurrence of a key wins."""

    __slots__ = ("levels",)

    def __init__(self) -> None:
        self.levels: dict[str, dict[str, AnyValue]] = {}

    def get(self, level: str, key: str) -> AnyValue | None:
        return self.levels.get(level, {}).get(key)


def extract(request: ExportLogsServiceRequest, mapping: RecordMapping) -> Extracted:
    """What to classify in ``request``: every LogRecord, in order, less those opted out and
    those without a body."""
    wanted = {level: mapping.wanted(level) for level in LEVELS}
    out = Extracted()
    lookup = _Lookup()
    for resource_logs in request.resource_logs:
        lookup.levels["resource"] = _picked(resource_logs.resource.attributes, wanted["resource"])
        for scope_logs in resource_logs.scope_logs:
            lookup.levels["scope"] = _picked(scope_logs.scope.attributes, wanted["scope"])
            for record in scope_logs.log_records:
                lookup.levels["record"] = _picked(record.attributes, wanted["record"])
                _extract_one(record, lookup, mapping, out)
    return out


def _extract_one(record: OtlpLogRecord, lookup: _Lookup, mapping: RecordMapping, out: Extracted) -> None:
    if any(condition.matches(lookup.get(condition.level, condition.key)) for condition in mapping.opt_out):
        out.skipped += 1
        return
    message = message_of(record, mapping)
    if message is None:
        out.missing.append(record)
        return
    out.targets.append(Target(record, LogRecord(source_of(lookup, mapping), message)))


def source_of(lookup: _Lookup, mapping: RecordMapping) -> str:
    for key in mapping.source_keys:
        value = lookup.get(key.level, key.key)
        if value is not None and value.WhichOneof("value") == "string_value" and value.string_value:
            return str(value.string_value)
    return mapping.default_source


def message_of(record: OtlpLogRecord, mapping: RecordMapping) -> str | None:
    """The log line of ``record``; None when it has no body."""
    if not record.HasField("body"):
        return None
    body = record.body
    if body.WhichOneof("value") == "kvlist_value":
        inner = next((pair.value for pair in body.kvlist_value.values if pair.key == mapping.message_key), None)
        if inner is None:
            return render(body, mapping.max_rendered_body_chars)
        body = inner
    kind = body.WhichOneof("value")
    if kind == "string_value":
        return str(body.string_value)
    if kind == "bytes_value":
        # Not UTF-8: the pipeline sees the surrogate escapes and reports invalid_utf8.
        return bytes(body.bytes_value).decode("utf-8", "surrogateescape")
    return render(body, mapping.max_rendered_body_chars)


def scalar_text(value: AnyValue) -> str | None:
    """A scalar AnyValue as text (booleans as true/false); None for arrays, maps and no value."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind in ("int_value", "double_value"):
        return str(getattr(value, kind))
    if kind == "bytes_value":
        return bytes(value.bytes_value).decode("utf-8", "replace")
    return None


def render(value: AnyValue, limit: int) -> str:
    """``value`` as compact JSON (bytes as base64), at most ``limit`` characters: rendering
    stops once the limit is reached, however large the value."""
    parts: list[str] = []
    size = 0
    for piece in _pieces(value, limit):
        parts.append(piece)
        size += len(piece)
        if size >= limit:
            break
    return "".join(parts)[:limit]


def _pieces(value: AnyValue, limit: int) -> Iterator[str]:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        yield "{"
        for i, pair in enumerate(value.kvlist_value.values):
            yield ("," if i else "") + _string(pair.key, limit) + ":"
            yield from _pieces(pair.value, limit)
        yield "}"
    elif kind == "array_value":
        yield "["
        for i, item in enumerate(value.array_value.values):
            if i:
                yield ","
            yield from _pieces(item, limit)
        yield "]"
    else:
        yield _scalar_json(value, kind, limit)


def _scalar_json(value: AnyValue, kind: str | None, limit: int) -> str:
    if kind == "string_value":
        return _string(value.string_value, limit)
    if kind == "bytes_value":
        return _string(_base64(bytes(value.bytes_value[: limit + 3])), limit)
    if kind is None:
        return "null"
    return json.dumps(getattr(value, kind))


def _string(text: str, limit: int) -> str:
    # Cut before quoting: what is past the limit is never rendered.
    return json.dumps(text[:limit], ensure_ascii=False)


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _picked(attributes: Any, keys: frozenset[str]) -> dict[str, AnyValue]:
    """Of ``attributes`` (repeated KeyValue), the values of ``keys``; the first of a key wins."""
    if not keys:
        return {}
    found: dict[str, AnyValue] = {}
    for pair in attributes:
        if pair.key in keys and pair.key not in found:
            found[pair.key] = pair.value
    return found


def tag(
    targets: Sequence[Target],
    decisions: Sequence[Decision],
    names: OtlpAttributesSettings,
    template_of: Callable[[str], str] | None = None,
) -> None:
    """Writes each decision into its target's attributes under ``names`` (null: not written),
    replacing attributes of those names. ``template_of``: the message's template
    (``core.masking.TemplateMasker.template``, the text the template id is the hash of); None,
    or a decision without a template id: no template attributes, and any such attribute the
    record came with is removed rather than left to contradict the label."""
    written = frozenset(n for n in (names.label, names.confidence, names.tier, names.template_id, names.template) if n)
    for target, decision in zip(targets, decisions, strict=True):
        values: list[tuple[str | None, AnyValue]] = [
            (names.label, AnyValue(string_value=decision.label)),
            (names.confidence, AnyValue(double_value=round(decision.confidence, 4))),
            (names.tier, AnyValue(string_value=decision.tier)),
        ]
        if decision.template_id:
            values.append((names.template_id, AnyValue(string_value=decision.template_id)))
            if template_of is not None:
                values.append((names.template, AnyValue(string_value=template_of(target.input.message))))
        set_attributes(target.record.attributes, written, [(n, v) for n, v in values if n])


def set_attributes(attributes: Any, remove: frozenset[str], values: Sequence[tuple[str, AnyValue]]) -> None:
    """Removes every attribute named in ``remove`` from ``attributes`` (repeated KeyValue), then
    appends ``values``."""
    for i in range(len(attributes) - 1, -1, -1):
        if attributes[i].key in remove:
            del attributes[i]
    for name, value in values:
        attributes.add(key=name, value=value)
