"""The OTLP receivers: OTLP/gRPC (``LogsService/Export``) and OTLP/HTTP (``POST /v1/logs``).

Both decode a request within the ``otlp`` bounds (``codec``), tag its records as one batch
(``Tagger``) and hand the tagged request to a ``Sink``. The sender is answered success only
after the sink accepted the request; a sink that is full answers ``Full`` and the sender is told
to come back later, as the OTLP specification defines: gRPC RESOURCE_EXHAUSTED with a
``google.rpc.RetryInfo`` detail, HTTP 429 with ``Retry-After``. A malformed request is
INVALID_ARGUMENT / 400, one past a size bound RESOURCE_EXHAUSTED / 413, each with a message
that names the fault and the setting.

OTLP/HTTP takes ``application/x-protobuf`` and ``application/json`` bodies, plain or
``Content-Encoding: gzip``, and answers in the request's content type (errors as a
``google.rpc.Status``). Uvicorn serves it on the event loop gRPC runs on, as the HTTP front end
does; the gRPC server is grpc.aio, which takes gzip-compressed requests on its own.

Both take ``otlp.tls`` (TLS, mutual with ``client_ca_file``) and ``otlp.auth`` (a bearer token
in ``authorization``: UNAUTHENTICATED / 401 with ``WWW-Authenticate: Bearer`` without it or with
a wrong one, compared in constant time), from the same helpers the gRPC and HTTP front ends use.

``ExporterSink`` exports each request straight to the upstream (``OtlpExporter``): delivery is
at most once until the durable buffer takes its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import grpc.aio
import uvicorn
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from logclass.config.settings import OtlpSettings
from logclass.engine.lanes import caller
from logclass.errors import LogclassError
from logclass.otlp import codec
from logclass.otlp.codec import CodecLimits, OtlpRequestError
from logclass.otlp.exporter import OtlpExporter, Outcome, _retry_info_message, _status_message, record_count
from logclass.otlp.metrics import OtlpMetrics
from logclass.otlp.tagger import Tagger
from logclass.secrets import SecurityConfigError, load_token, tls_files
from logclass.security import BearerTokenInterceptor, bearer, server_credentials, tls_mode, token_matches, uvicorn_tls

log = logging.getLogger("logclass.otlp")

SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
HTTP_PATH = "/v1/logs"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
# google.rpc.Code values of the HTTP error bodies.
_CODE_INVALID_ARGUMENT = 3
_CODE_NOT_FOUND = 5
_CODE_UNAUTHENTICATED = 16
_CODE_UNIMPLEMENTED = 12


class OtlpServeError(LogclassError):
    """A receiver cannot listen where its setting says."""


# -- the sink -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """The sink took the request: the sender is answered success."""


@dataclass(frozen=True, slots=True)
class Full:
    """The sink has no room now: the sender is asked to retry after ``retry_after_s``."""

    retry_after_s: float
    message: str = "logclass cannot take more logs now"


class Sink(Protocol):
    """Where tagged requests go. ``accept`` returns once the request is where it is to be kept
    (or delivered); the receivers answer the sender only after it returned."""

    async def accept(self, request: ExportLogsServiceRequest) -> Accepted | Full: ...


class ExporterSink:
    """Exports each request to the upstream within the sender's call: AT MOST ONCE. Success is
    answered once the upstream took the request (partial success included); an upstream that
    asks for a retry later makes the sender retry later (``Full``). A request the upstream
    refuses for good (dead letter) is logged by the exporter and dropped, and the sender is
    answered success: sending it again would not change the upstream's answer. The durable
    buffer (and its dead-letter path) of the next slice takes this sink's place for at-least-once
    delivery."""

    def __init__(self, exporter: OtlpExporter, min_retry_after_s: float = 1.0) -> None:
        self.exporter = exporter
        self.min_retry_after_s = min_retry_after_s

    async def accept(self, request: ExportLogsServiceRequest) -> Accepted | Full:
        result = await self.exporter.export(request)
        if result.outcome is Outcome.RETRY_LATER:
            message = f"the upstream cannot take logs now: {result.message}"
            return Full(max(result.delay_s, self.min_retry_after_s), message)
        if result.outcome is Outcome.DEAD_LETTER:
            log.error("upstream refused %d records for good (%s); dropped", result.records, result.status)
        return Accepted()


# -- what both receivers do ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Refusal:
    grpc_code: grpc.StatusCode
    http_status: int
    message: str
    retry_after_s: float | None = None


class _Handling:
    """Decoded request in, the sender's answer out: None for success, else a refusal."""

    def __init__(
        self, settings: OtlpSettings, tagger: Tagger, sink: Sink, protocol: str, metrics: OtlpMetrics | None
    ) -> None:
        self.limits = CodecLimits.of(settings)
        self.tagger = tagger
        self.sink = sink
        self.protocol = protocol
        self.metrics = metrics

    def rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.requests_rejected.labels(self.protocol, reason).inc()

    async def handle(
        self, decode: Callable[[], ExportLogsServiceRequest], owner: str, time_remaining: float | None
    ) -> _Refusal | None:
        try:
            request = decode()
        except OtlpRequestError as exc:
            self.rejected("too_large" if exc.too_large else "malformed")
            return _Refusal(exc.grpc_status, exc.http_status, str(exc))
        tagged = await self.tagger.tag(request, owner, time_remaining)
        try:
            answer = await self.sink.accept(tagged.request)
        except Exception:
            log.exception("the OTLP sink failed; the sender is asked to retry")
            self.rejected("unavailable")
            return _Refusal(grpc.StatusCode.UNAVAILABLE, 503, "logclass could not keep the logs; retry", 1.0)
        if isinstance(answer, Full):
            self.rejected("full")
            return _Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, answer.message, answer.retry_after_s)
        if self.metrics is not None:
            self.metrics.records_in.labels(self.protocol).inc(record_count(tagged.request))
        return None


def status_bytes(code: int, message: str, retry_after_s: float | None = None) -> bytes:
    """A ``google.rpc.Status`` with a ``RetryInfo`` detail when ``retry_after_s`` is given."""
    status: Any = _status_message()
    status.code = code
    status.message = message
    if retry_after_s is not None:
        info: Any = _retry_info_message()
        # The RetryInfo class is of the exporter's own descriptor pool: its Duration is too.
        whole = int(retry_after_s)
        info.retry_delay.seconds = whole
        info.retry_delay.nanos = round((retry_after_s - whole) * 1e9)
        status.details.add(type_url=RETRY_INFO_TYPE, value=info.SerializeToString())
    data: bytes = status.SerializeToString()
    return data


def host_port(address: str, setting: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets); port 0: one the system picks."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise OtlpServeError(f"{setting}: {address!r} is not HOST:PORT (e.g. 127.0.0.1:4318)")
    return host.strip("[]") or "0.0.0.0", int(port)


# -- OTLP/gRPC ----------------------------------------------------------------------------------


class OtlpGrpcReceiver:
    """``LogsService/Export`` on ``address`` (default ``otlp.grpc_listen``). The request is read
    as bytes and decoded by the codec, so a malformed one is INVALID_ARGUMENT with the codec's
    message (grpc's own deserializer would answer INTERNAL)."""

    def __init__(
        self,
        settings: OtlpSettings,
        tagger: Tagger,
        sink: Sink,
        address: str | None = None,
        metrics: OtlpMetrics | None = None,
    ) -> None:
        listen = address or settings.grpc_listen
        if not listen:
            raise OtlpServeError("otlp.grpc_listen is null: no OTLP/gRPC receiver")
        self.address: str = listen
        self.handling = _Handling(settings, tagger, sink, "grpc", metrics)
        self.tls = tls_files(settings.tls, "otlp")
        self.credentials = server_credentials(settings.tls, "otlp")
        self.token = load_token(settings.auth, "otlp.auth")
        self._max_request_bytes = settings.max_request_bytes
        # Made in start(): grpc.aio binds a server to the running event loop, and the front end is
        # built before there is one (a thread without a loop raised at construction).
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def describe(self) -> str:
        token = "required" if self.token else "off"
        return f"OTLP/gRPC on {self.address} (tls {tls_mode(self.tls)}, token {token})"

    def _server(self) -> grpc.aio.Server:
        interceptors = [BearerTokenInterceptor(self.token, setting="otlp.auth")] if self.token else []
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_request_bytes),
                ("grpc.max_send_message_length", 1 << 20),
            ],
            interceptors=interceptors,
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._export, response_serializer=ExportLogsServiceResponse.SerializeToString
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
        return server

    async def start(self) -> int:
        """Listens; the port bound (the one the system picked for port 0)."""
        server = self.server = self._server()
        host, port = host_port(self.address, "otlp.grpc_listen")
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self.credentials is not None:
                self.port = server.add_secure_port(target, self.credentials)
            else:
                self.port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise OtlpServeError(f"cannot listen on {self.address} (otlp.grpc_listen): {exc}") from exc
        await server.start()
        return self.port

    async def stop(self, grace_s: float) -> None:
        if self.server is not None:
            await self.server.stop(grace_s)

    async def _export(self, body: bytes, context: grpc.aio.ServicerContext) -> ExportLogsServiceResponse:
        limits = self.handling.limits
        refusal = await self.handling.handle(
            lambda: codec.decode_protobuf(body, limits), caller("otlp", context.peer()), context.time_remaining()
        )
        if refusal is None:
            return ExportLogsServiceResponse()
        metadata: tuple[tuple[str, bytes], ...] = ()
        if refusal.retry_after_s is not None:
            details = status_bytes(refusal.grpc_code.value[0], refusal.message, refusal.retry_after_s)
            metadata = ((STATUS_DETAILS_KEY, details),)
        await context.abort(refusal.grpc_code, refusal.message, trailing_metadata=metadata)
        raise AssertionError("context.abort returned")  # pragma: no cover


# -- OTLP/HTTP ----------------------------------------------------------------------------------

_Receive = Callable[[], Awaitable[dict[str, Any]]]
_Send = Callable[[dict[str, Any]], Awaitable[None]]


class OtlpHttpApp:
    """The ASGI app of OTLP/HTTP: ``POST /v1/logs`` and nothing else; with ``token``, only for
    callers sending ``Authorization: Bearer <token>``."""

    def __init__(
        self,
        settings: OtlpSettings,
        tagger: Tagger,
        sink: Sink,
        metrics: OtlpMetrics | None = None,
        token: str | None = None,
    ) -> None:
        self.handling = _Handling(settings, tagger, sink, "http", metrics)
        self.max_body = settings.max_request_bytes
        self.expected = bearer(token)

    async def __call__(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        answer_type = content_type if content_type in (PROTOBUF, JSON) else None
        if self.expected is not None and not token_matches(headers.get("authorization", ""), self.expected):
            message = "missing or wrong bearer token (header Authorization: Bearer TOKEN; otlp.auth)"
            self.handling.rejected("unauthenticated")
            await _error(send, 401, answer_type, _CODE_UNAUTHENTICATED, message, [(b"www-authenticate", b"Bearer")])
            return
        if scope["path"] != HTTP_PATH:
            message = f"not found: OTLP/HTTP logs are POSTed to {HTTP_PATH}"
            self.handling.rejected("not_found")
            await _error(send, 404, answer_type, _CODE_NOT_FOUND, message)
            return
        if scope["method"] != "POST":
            self.handling.rejected("method")
            await _error(
                send, 405, answer_type, _CODE_UNIMPLEMENTED, f"{HTTP_PATH} takes POST only", [(b"allow", b"POST")]
            )
            return
        if answer_type is None:
            message = f"Content-Type {content_type or '(none)'!r} is not taken: send {PROTOBUF} or {JSON} (OTLP/HTTP)"
            self.handling.rejected("content_type")
            await _error(send, 415, JSON, _CODE_INVALID_ARGUMENT, message)
            return
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            message = f"Content-Encoding {encoding!r} is not taken: send gzip or none"
            self.handling.rejected("content_type")
            await _error(send, 415, answer_type, _CODE_INVALID_ARGUMENT, message)
            return
        try:
            body = await self._body(headers, receive)
        except OtlpRequestError as exc:
            self.handling.rejected("too_large" if exc.too_large else "malformed")
            await _error(send, exc.http_status, answer_type, exc.grpc_status.value[0], str(exc))
            return
        limits = self.handling.limits

        def decode() -> ExportLogsServiceRequest:
            data = codec.inflate_gzip(body, limits.max_request_bytes) if encoding == "gzip" else body
            if answer_type == JSON:
                return codec.decode_json(data, limits)
            return codec.decode_protobuf(data, limits)

        client = scope.get("client")
        owner = caller("otlp", client[0] if client else "unknown")
        refusal = await self.handling.handle(decode, owner, None)
        if refusal is None:
            body_out = ExportLogsServiceResponse().SerializeToString() if answer_type == PROTOBUF else b"{}"
            await _respond(send, 200, answer_type, body_out)
            return
        extra: list[tuple[bytes, bytes]] = []
        if refusal.retry_after_s is not None:
            extra.append((b"retry-after", str(max(1, math.ceil(refusal.retry_after_s))).encode()))
        await _error(
            send, refusal.http_status, answer_type, refusal.grpc_code.value[0], refusal.message, extra, refusal
        )

    async def _body(self, headers: dict[str, str], receive: _Receive) -> bytes:
        """The request body, refused (413) as soon as it passes otlp.max_request_bytes."""
        too_large = OtlpRequestError(
            f"the request body is larger than otlp.max_request_bytes ({self.max_body:,} bytes); raise it or send "
            "smaller batches",
            too_large=True,
        )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise OtlpRequestError("the sender closed the connection before the body ended")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _respond(
    send: _Send, status: int, content_type: str, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: _Send,
    status: int,
    content_type: str | None,
    code: int,
    message: str,
    extra: list[tuple[bytes, bytes]] | None = None,
    refusal: _Refusal | None = None,
) -> None:
    """A ``google.rpc.Status`` in the request's content type (JSON when it has none we take)."""
    if content_type == PROTOBUF:
        retry = refusal.retry_after_s if refusal is not None else None
        await _respond(send, status, PROTOBUF, status_bytes(code, message, retry), extra)
    else:
        body = json.dumps({"code": code, "message": message}, ensure_ascii=False).encode("utf-8")
        await _respond(send, status, JSON, body, extra)


class _EmbeddedServer(uvicorn.Server):
    """Uvicorn without its signal handlers (the process that runs the receivers owns them)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class OtlpHttpReceiver:
    """``POST /v1/logs`` on ``address`` (default ``otlp.http_listen``), served by uvicorn."""

    def __init__(
        self,
        settings: OtlpSettings,
        tagger: Tagger,
        sink: Sink,
        address: str | None = None,
        grace_s: float = 5.0,
        metrics: OtlpMetrics | None = None,
    ) -> None:
        listen = address or settings.http_listen
        if not listen:
            raise OtlpServeError("otlp.http_listen is null: no OTLP/HTTP receiver")
        self.address: str = listen
        self.tls = tls_files(settings.tls, "otlp")
        self.token = load_token(settings.auth, "otlp.auth")
        self.app = OtlpHttpApp(settings, tagger, sink, metrics, self.token)
        self.config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=max(1, round(grace_s)),
            **uvicorn_tls(self.tls),
        )
        try:
            self.config.load()
        except (OSError, ssl.SSLError) as exc:
            raise SecurityConfigError(f"otlp.tls: cannot load the certificate, key or client CA: {exc}") from exc
        self.server = _EmbeddedServer(self.config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    def describe(self) -> str:
        scheme = "https" if self.tls else "http"
        token = "required" if self.token else "off"
        return f"OTLP/HTTP on {scheme}://{self.address}{HTTP_PATH} (tls {tls_mode(self.tls)}, token {token})"

    def _bind(self) -> socket.socket:
        host, port = host_port(self.address, "otlp.http_listen")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family, backlog=2048)
        except OSError as exc:
            raise OtlpServeError(
                f"cannot listen on {self.address} (otlp.http_listen): {exc.strerror}; is another server using it?"
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    async def start(self) -> int:
        """Listens; the port bound (the one the system picked for port 0)."""
        sock = self._bind()
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="otlp-http")
        listening = asyncio.create_task(self.server.listening.wait())
        await asyncio.wait([self._task, listening], return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if self._task.done():
            self._task.result()
            raise OtlpServeError(f"the OTLP/HTTP server on {self.address} stopped as it started; see the log above")
        return self.port

    async def stop(self, grace_s: float) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        await self._task
