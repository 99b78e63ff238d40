"""Exports OTLP logs requests to the configured upstream (``otlp.upstream``): OTLP/gRPC or OTLP/HTTP.

One ``export`` call delivers one ``ExportLogsServiceRequest`` and says what became of it, as an
``ExportResult``; it never raises for the upstream's sake. What the OTLP specification says a
client does decides the outcome:

- delivered: the upstream answered success. With ``partial_success.rejected_log_records > 0``
  the outcome is partial: the upstream took the request and dropped that many records, for a
  reason it gives; the spec says such a request is not to be sent again, so it is logged,
  counted and reported, never retried.
- retryable failures: gRPC UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
  DATA_LOSS, and RESOURCE_EXHAUSTED when its status carries a ``google.rpc.RetryInfo`` (the
  upstream says recovery is possible, and when); HTTP 429, 502, 503 and 504; no connection; no
  answer within ``timeout_ms``. Retried within the call after an exponential backoff with jitter
  (``core.backoff``), or after the delay the upstream asked for (RetryInfo, ``Retry-After``),
  ``retries`` times at most and while the next wait ends within ``max_elapsed_ms``; past that
  the outcome is retry-later, with the delay to wait before the next call: the caller keeps the
  batch (buffered) and tries again.
- any other failure (INVALID_ARGUMENT, UNAUTHENTICATED, other 4xx and 5xx, RESOURCE_EXHAUSTED
  without RetryInfo): dead-letter, with the reason. RESOURCE_EXHAUSTED without RetryInfo is not
  retried, as the spec says: it is what gRPC answers for a message over the receiver's size
  limit, which sending again never fixes.

TLS is on when the endpoint is ``https://``, for gRPC as for HTTP: the upstream's certificate is
checked against ``tls.ca_file`` (else the system CAs), and ``tls.cert_file``/``key_file`` are
shown to an upstream that asks for a client certificate. ``token_file`` is sent as a bearer
token, ``headers`` with every request (gRPC metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import gzip
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio
import httpx
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from logclass.config.settings import OtlpUpstreamSettings
from logclass.core.backoff import Backoff
from logclass.errors import LogclassError
from logclass.secrets import SecretError, read_secret

log = logging.getLogger("logclass.otlp.exporter")

HTTP_PATH = "/v1/logs"
RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
# A delay an upstream asks for (Retry-After, RetryInfo) is honoured up to this long: a broken or
# hostile upstream cannot park the export for a day.
MAX_UPSTREAM_DELAY_S = 300.0
# Answers are small (an ExportLogsServiceResponse, a google.rpc.Status); a larger body is not read.
MAX_RESPONSE_BYTES = 1024 * 1024
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


class OtlpExporterError(LogclassError):
    """The ``otlp.upstream`` settings cannot be used (a file that cannot be read, a bad header)."""


class Outcome(str, enum.Enum):
    DELIVERED = "delivered"
    PARTIAL = "partial"
    RETRY_LATER = "retry_later"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What became of one export call.

    ``delay_s``: for RETRY_LATER, seconds to wait before exporting the batch again (the upstream's
    own ask when it made one). ``rejected``: for PARTIAL, records the upstream dropped.
    ``message``: the upstream's error message, or why the batch is dead-lettered or waits.
    ``status``: the last failure's status (``UNAVAILABLE``, ``HTTP 503``, ``connect``, ``timeout``).
    """

    outcome: Outcome
    records: int
    attempts: int
    delay_s: float = 0.0
    rejected: int = 0
    message: str = ""
    status: str | None = None

    @property
    def done(self) -> bool:
        """The batch left the caller's hands: delivered (maybe partly) or to be dead-lettered."""
        return self.outcome is not Outcome.RETRY_LATER


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One attempt's answer: ``response`` on success; else ``retryable`` with an optional
    ``delay_s`` the upstream asked for."""

    response: ExportLogsServiceResponse | None = None
    retryable: bool = False
    delay_s: float | None = None
    status: str | None = None
    message: str = ""


def record_count(request: ExportLogsServiceRequest) -> int:
    return sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)


class OtlpExporter:
    """Exports to ``settings.endpoint``; one per upstream, shared by concurrent calls. ``sleep``
    and ``backoff`` may be replaced by tests. Call ``close`` when done."""

    def __init__(
        self,
        settings: OtlpUpstreamSettings,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.endpoint is None:
            raise OtlpExporterError("otlp.upstream.endpoint is null: no upstream to export to")
        url = urlsplit(settings.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise OtlpExporterError(f"otlp.upstream.endpoint {settings.endpoint!r} is not an http:// or https:// URL")
        self.settings = settings
        self.tls = url.scheme == "https"
        tls = settings.tls
        if not self.tls and (tls.ca_file or tls.cert_file or tls.key_file):
            raise OtlpExporterError("otlp.upstream.tls is set but the endpoint is http://: use https:// for TLS")
        if bool(tls.cert_file) != bool(tls.key_file):
            raise OtlpExporterError("otlp.upstream.tls needs both cert_file and key_file (or neither)")
        self._sleep = sleep
        self._clock = clock
        self._backoff = Backoff(settings.backoff_ms / 1000.0, settings.max_backoff_ms / 1000.0, jitter=True)
        self._timeout_s = settings.timeout_ms / 1000.0
        self._headers = _headers(settings)
        self._target = url.netloc if settings.protocol == "grpc" else settings.endpoint.rstrip("/") + HTTP_PATH
        self._channel: grpc.aio.Channel | None = None
        self._stub: logs_service_pb2_grpc.LogsServiceStub | None = None
        self._http: httpx.AsyncClient | None = None
        self._ssl = _ssl_context(settings) if self.tls and settings.protocol == "http" else None
        self._credentials = _grpc_credentials(settings) if self.tls and settings.protocol == "grpc" else None

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        http, self._http = self._http, None
        if channel is not None:
            await channel.close()
        if http is not None:
            await http.aclose()

    async def export(self, request: ExportLogsServiceRequest) -> ExportResult:
        """Delivers ``request``, retrying what is retryable within the call's bounds."""
        records = record_count(request)
        body = request.SerializeToString()
        started = self._clock()
        budget_s = self.settings.max_elapsed_ms / 1000.0
        attempt = 0
        while True:
            attempt += 1
            answer = await (self._grpc(body) if self.settings.protocol == "grpc" else self._post(body))
            if answer.response is not None:
                return self._delivered(answer.response, records, attempt)
            if not answer.retryable:
                log.error(
                    "upstream %s refused %d records (%s): %s; not retryable, to the dead letters",
                    self.settings.endpoint,
                    records,
                    answer.status,
                    answer.message,
                )
                return ExportResult(Outcome.DEAD_LETTER, records, attempt, message=answer.message, status=answer.status)
            delay = self._delay(answer, attempt - 1)
            elapsed = self._clock() - started
            if attempt > self.settings.retries or elapsed + delay > budget_s:
                log.warning(
                    "upstream %s: %s (%s) after %d attempts; %d records wait %.1fs",
                    self.settings.endpoint,
                    answer.message,
                    answer.status,
                    attempt,
                    records,
                    delay,
                )
                return ExportResult(
                    Outcome.RETRY_LATER, records, attempt, delay_s=delay, message=answer.message, status=answer.status
                )
            log.info(
                "upstream %s: %s (%s); retry %d in %.2fs",
                self.settings.endpoint,
                answer.message,
                answer.status,
                attempt,
                delay,
            )
            await self._sleep(delay)

    def _delay(self, answer: _Attempt, failures: int) -> float:
        if answer.delay_s is not None:
            return min(max(answer.delay_s, 0.0), MAX_UPSTREAM_DELAY_S)
        return self._backoff.delay(failures)

    def _delivered(self, response: ExportLogsServiceResponse, records: int, attempts: int) -> ExportResult:
        partial = response.partial_success
        if partial.rejected_log_records > 0:
            log.warning(
                "upstream %s rejected %d of %d records (not retried): %s",
                self.settings.endpoint,
                partial.rejected_log_records,
                records,
                partial.error_message or "no reason given",
            )
            return ExportResult(
                Outcome.PARTIAL, records, attempts, rejected=partial.rejected_log_records, message=partial.error_message
            )
        if partial.error_message:  # a warning from the upstream, every record taken
            log.warning("upstream %s took every record, warning: %s", self.settings.endpoint, partial.error_message)
        return ExportResult(Outcome.DELIVERED, records, attempts, message=partial.error_message)

    # -- OTLP/gRPC ---------------------------------------------------------------------------------

    def _grpc_stub(self) -> logs_service_pb2_grpc.LogsServiceStub:
        if self._stub is None:
            options = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(self._target, self._credentials, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(self._target, options=options)
            self._stub = logs_service_pb2_grpc.LogsServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def _grpc(self, body: bytes) -> _Attempt:
        stub = self._grpc_stub()
        request = ExportLogsServiceRequest.FromString(body)
        compression = grpc.Compression.Gzip if self.settings.compression == "gzip" else grpc.Compression.NoCompression
        try:
            response = await stub.Export(
                request, timeout=self._timeout_s, metadata=tuple(self._headers.items()), compression=compression
            )
        except grpc.aio.AioRpcError as exc:
            return _grpc_failure(exc)
        return _Attempt(response=response)

    # -- OTLP/HTTP ---------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                verify=self._ssl if self._ssl is not None else True,
                timeout=httpx.Timeout(self._timeout_s),
                follow_redirects=False,
                trust_env=False,
            )
        return self._http

    async def _post(self, body: bytes) -> _Attempt:
        headers = {**self._headers, "content-type": "application/x-protobuf"}
        if self.settings.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
            headers["content-encoding"] = "gzip"
        client = self._client()
        try:
            async with asyncio.timeout(self._timeout_s):
                async with client.stream("POST", self._target, content=body, headers=headers) as response:
                    content = await _read_bounded(response)
        except (TimeoutError, httpx.TimeoutException):
            return _Attempt(retryable=True, status="timeout", message=f"no answer within {self._timeout_s:g}s")
        except (httpx.TransportError, ssl.SSLError) as exc:
            # ssl.SSLError: with TLS 1.3 a server's refusal of the client certificate arrives after
            # the handshake, at the first read, and httpx lets it through unmapped.
            return _Attempt(retryable=True, status="connect", message=f"{type(exc).__name__}: {exc}")
        return _http_answer(response, content)


def _http_answer(response: httpx.Response, content: bytes | None) -> _Attempt:
    code = response.status_code
    status = f"HTTP {code}"
    if 200 <= code < 300:
        parsed = ExportLogsServiceResponse()
        if content and "json" not in response.headers.get("content-type", ""):
            with contextlib.suppress(DecodeError):
                parsed.ParseFromString(content)
        elif content:
            with contextlib.suppress(json_format.ParseError, ValueError):
                json_format.Parse(content, parsed, ignore_unknown_fields=True)
        return _Attempt(response=parsed)
    message = _http_error_message(response, content)
    if code in RETRYABLE_HTTP:
        return _Attempt(
            retryable=True, delay_s=retry_after(response.headers.get("retry-after")), status=status, message=message
        )
    return _Attempt(status=status, message=message)


def _http_error_message(response: httpx.Response, content: bytes | None) -> str:
    """The message of the google.rpc.Status an OTLP/HTTP server answers a failure with, else the
    start of the body's text."""
    if not content:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if "protobuf" in response.headers.get("content-type", ""):
        status = _status_message()
        with contextlib.suppress(DecodeError):
            status.ParseFromString(content)
            if status.message:
                return str(status.message)
    return content[:512].decode("utf-8", "replace").strip() or f"HTTP {response.status_code}"


async def _read_bounded(response: httpx.Response) -> bytes | None:
    """The body, or None when it passes MAX_RESPONSE_BYTES (then it is not read further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP-date); None when
    absent or unreadable (then the backoff decides)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


# -- gRPC failures: the status code, and RetryInfo from the status details -------------------------


def _grpc_failure(exc: grpc.aio.AioRpcError) -> _Attempt:
    code = exc.code()
    message = exc.details() or code.name
    status = code.name
    if code in RETRYABLE_GRPC:
        return _Attempt(retryable=True, delay_s=_retry_info(exc), status=status, message=message)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        delay = _retry_info(exc)
        if delay is not None:  # the upstream throttles, and says when to come back
            return _Attempt(retryable=True, delay_s=delay, status=status, message=message)
        return _Attempt(status=status, message=f"{message} (RESOURCE_EXHAUSTED without RetryInfo is not retried)")
    return _Attempt(status=status, message=message)


def _retry_info(exc: grpc.aio.AioRpcError) -> float | None:
    """The delay of a google.rpc.RetryInfo in the status details (trailing metadata
    ``grpc-status-details-bin``, a google.rpc.Status), None when there is none."""
    for key, value in exc.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = _status_message()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.type_url != _RETRY_INFO_TYPE:
                continue
            info = _retry_info_message()
            try:
                info.ParseFromString(detail.value)
            except DecodeError:
                return None
            delay = info.retry_delay
            seconds = delay.seconds + delay.nanos / 1e9
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


# google.rpc.Status and google.rpc.RetryInfo, built in a private descriptor pool: the published
# googleapis-common-protos is not a dependency, and a pool of our own cannot clash with it.
_POOL = descriptor_pool.DescriptorPool()
_CLASSES: dict[str, type[Message]] = {}


def _rpc_classes() -> dict[str, type[Message]]:
    if not _CLASSES:
        from google.protobuf import any_pb2, duration_pb2

        for dependency in (any_pb2, duration_pb2):
            _POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(dependency.DESCRIPTOR.serialized_pb))
        proto = descriptor_pb2.FileDescriptorProto(
            name="logclass/otlp/google_rpc.proto",
            package="google.rpc",
            syntax="proto3",
            dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
        )
        field = descriptor_pb2.FieldDescriptorProto
        status = proto.message_type.add(name="Status")
        status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
        status.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
        status.field.add(
            name="details",
            number=3,
            type=field.TYPE_MESSAGE,
            label=field.LABEL_REPEATED,
            type_name=".google.protobuf.Any",
        )
        info = proto.message_type.add(name="RetryInfo")
        info.field.add(
            name="retry_delay",
            number=1,
            type=field.TYPE_MESSAGE,
            label=field.LABEL_OPTIONAL,
            type_name=".google.protobuf.Duration",
        )
        _POOL.Add(proto)
        for name in ("Status", "RetryInfo"):
            _CLASSES[name] = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"google.rpc.{name}"))
    return _CLASSES


def _status_message() -> Message:
    return _rpc_classes()["Status"]()


def _retry_info_message() -> Message:
    return _rpc_classes()["RetryInfo"]()


# -- settings ------------------------------------------------------------------------------------


def _headers(settings: OtlpUpstreamSettings) -> dict[str, str]:
    """``headers`` (names lowercased, as gRPC metadata needs) and the bearer token of ``token_file``."""
    headers: dict[str, str] = {}
    for name, value in settings.headers.items():
        key = name.strip().lower()
        if not key or not all(c.isalnum() or c in "-_." for c in key) or key.endswith("-bin"):
            raise OtlpExporterError(f"otlp.upstream.headers: {name!r} is not a usable header name")
        if any(c in value for c in "\r\n\0"):
            raise OtlpExporterError(f"otlp.upstream.headers: the value of {name!r} holds a line break or NUL")
        headers[key] = value
    try:
        token = read_secret(None, settings.token_file, "otlp.upstream.token")
    except SecretError as exc:
        raise OtlpExporterError(str(exc)) from exc
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers


def _read(path: str | None, setting: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise OtlpExporterError(f"cannot read otlp.upstream.tls.{setting} {path}: {exc.strerror}") from exc


def _grpc_credentials(settings: OtlpUpstreamSettings) -> grpc.ChannelCredentials:
    tls = settings.tls
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file"),
        private_key=_read(tls.key_file, "key_file"),
        certificate_chain=_read(tls.cert_file, "cert_file"),
    )


def _ssl_context(settings: OtlpUpstreamSettings) -> ssl.SSLContext:
    tls = settings.tls
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
        if tls.cert_file and tls.key_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise OtlpExporterError(f"cannot load otlp.upstream.tls files: {exc}") from exc
    return context
