"""A receiving OTLP logs server for the tests (the upstream logclass exports to), on 127.0.0.1:
OTLP/gRPC (the published LogsService servicer on a grpc.server) and OTLP/HTTP (POST /v1/logs on
the standard library's http.server), sharing no code with ``logclass.otlp`` (a bug there must not
cancel out here).

It records every request it takes (decoded, with its headers), and can be told to:

- fail the next N calls with a gRPC status (with a google.rpc.RetryInfo delay) or an HTTP
  status (with a ``Retry-After``): ``fail_next``;
- answer ``partial_success``: ``partial``;
- require a bearer token (401 / UNAUTHENTICATED otherwise): ``token``;
- never answer, until released or stopped: ``hang``;
- serve TLS, asking for a client certificate when given a client CA;
- stop and start again on the same ports.

Waiting is event-gated (a Condition notified on every call), never a sleep loop.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

HTTP_STATUS_OF = {
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def rpc_status(code: int, message: str, retry_delay_s: float | None = None) -> bytes:
    """A google.rpc.Status, encoded by hand (googleapis-common-protos is not installed), with a
    google.rpc.RetryInfo detail when ``retry_delay_s`` is given."""
    out = (_varint(1 << 3 | 0) + _varint(code) if code else b"") + _field(2, message.encode())
    if retry_delay_s is not None:
        seconds = int(retry_delay_s)
        duration = duration_pb2.Duration(seconds=seconds, nanos=round((retry_delay_s - seconds) * 1e9))
        info = _field(1, duration.SerializeToString())
        detail = any_pb2.Any(type_url="type.googleapis.com/google.rpc.RetryInfo", value=info)
        out += _field(3, detail.SerializeToString())
    return out


@dataclass(frozen=True)
class Received:
    protocol: str  # grpc or http
    request: ExportLogsServiceRequest
    headers: dict[str, str]

    @property
    def bodies(self) -> list[str]:
        return [
            record.body.string_value
            for resource in self.request.resource_logs
            for scope in resource.scope_logs
            for record in scope.log_records
        ]


@dataclass
class Fault:
    grpc_code: grpc.StatusCode
    http_status: int
    message: str
    retry_after: str | None = None  # HTTP Retry-After header
    retry_info_s: float | None = None  # gRPC RetryInfo delay


@dataclass
class _Answer:
    response: ExportLogsServiceResponse | None = None
    fault: Fault | None = None


@dataclass
class OtlpUpstream:
    """``start()`` it, export to ``grpc_endpoint`` / ``http_endpoint``, ``stop()`` it."""

    # 0: a port the system picks at the first start (no race with other tests), kept for restarts.
    grpc_port: int = 0
    http_port: int = 0
    token: str | None = None
    # (cert_file, key_file, client_ca_file or None): TLS on both servers; a client CA requires
    # a client certificate it signed.
    tls: tuple[str, str, str | None] | None = None
    received: list[Received] = field(default_factory=list)
    calls: int = 0  # every call, refused ones included
    unauthorized: int = 0
    hang: bool = False

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._faults: list[Fault] = []
        self._partial: ExportLogsPartialSuccess | None = None
        self._release = threading.Event()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.hanging = threading.Event()  # set when a call is being held by ``hang``

    # -- endpoints and lifecycle ----------------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    def start(self) -> OtlpUpstream:
        self._release.clear()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Servicer(self), server)
        address = f"127.0.0.1:{self.grpc_port}"
        if self.tls:
            cert, key, client_ca = self.tls
            creds = grpc.ssl_server_credentials(
                [(_bytes(key), _bytes(cert))],
                root_certificates=_bytes(client_ca) if client_ca else None,
                require_client_auth=client_ca is not None,
            )
            self.grpc_port = server.add_secure_port(address, creds)
        else:
            self.grpc_port = server.add_insecure_port(address)
        server.start()
        self._grpc = server
        http = ThreadingHTTPServer(("127.0.0.1", self.http_port), _handler(self))
        self.http_port = http.server_address[1]
        http.daemon_threads = True
        if self.tls:
            import ssl

            cert, key, client_ca = self.tls
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            if client_ca:
                context.load_verify_locations(cafile=client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
            http.socket = context.wrap_socket(http.socket, server_side=True)
        self._http = http
        self._http_thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._http_thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # calls held by ``hang`` end
        grpc_server, self._grpc = self._grpc, None
        if grpc_server is not None:
            grpc_server.stop(grace=None).wait(5)
        http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.server_close()
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OtlpUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what it does next -----------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        *,
        http_status: int | None = None,
        message: str = "upstream says no",
        retry_after: str | None = None,
        retry_info_s: float | None = None,
    ) -> None:
        status = http_status if http_status is not None else HTTP_STATUS_OF.get(code, 500)
        with self._cond:
            self._faults.extend(Fault(code, status, message, retry_after, retry_info_s) for _ in range(n))

    def partial(self, rejected: int, message: str) -> None:
        """Every later success answers partial_success with ``rejected`` records rejected."""
        with self._cond:
            self._partial = ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=message)

    # -- what it got ---------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[OtlpUpstream], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def bodies(self) -> list[str]:
        with self._cond:
            return [body for r in self.received for body in r.bodies]

    # -- one call, either protocol ---------------------------------------------------------------

    def _call(self, protocol: str, decode: Callable[[], ExportLogsServiceRequest], headers: dict[str, str]) -> _Answer:
        with self._cond:
            self.calls += 1
            self._cond.notify_all()
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                self.unauthorized += 1
                return _Answer(fault=Fault(grpc.StatusCode.UNAUTHENTICATED, 401, "missing or wrong bearer token"))
            hang = self.hang
            fault = self._faults.pop(0) if self._faults else None
        if hang:
            self.hanging.set()
            self._release.wait(30)
            return _Answer(fault=Fault(grpc.StatusCode.UNAVAILABLE, 503, "released"))
        if fault is not None:
            return _Answer(fault=fault)
        request = decode()
        with self._cond:
            self.received.append(Received(protocol, request, headers))
            partial = self._partial
            self._cond.notify_all()
        response = ExportLogsServiceResponse()
        if partial is not None:
            response.partial_success.CopyFrom(partial)
        return _Answer(response=response)


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class _Servicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, upstream: OtlpUpstream) -> None:
        self.upstream = upstream

    def Export(self, request: ExportLogsServiceRequest, context: grpc.ServicerContext) -> ExportLogsServiceResponse:
        headers = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        answer = self.upstream._call("grpc", lambda: request, headers)
        if answer.fault is not None:
            fault = answer.fault
            if fault.retry_info_s is not None:
                details = rpc_status(fault.grpc_code.value[0], fault.message, fault.retry_info_s)
                context.set_trailing_metadata((("grpc-status-details-bin", details),))
            context.abort(fault.grpc_code, fault.message)
        assert answer.response is not None
        return answer.response


def _handler(upstream: OtlpUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if self.path != "/v1/logs":
                self._send(404, b"not found", "text/plain")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}

            def decode() -> ExportLogsServiceRequest:
                data = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
                return ExportLogsServiceRequest.FromString(data)

            answer = upstream._call("http", decode, headers)
            with contextlib.suppress(OSError):
                if answer.fault is not None:
                    fault = answer.fault
                    extra = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
                    status = rpc_status(fault.grpc_code.value[0], fault.message)
                    self._send(fault.http_status, status, "application/x-protobuf", extra)
                else:
                    assert answer.response is not None
                    self._send(200, answer.response.SerializeToString(), "application/x-protobuf")

        def _send(self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
