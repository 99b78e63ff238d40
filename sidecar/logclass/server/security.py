"""Transport security and caller authentication for the sidecar."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from logclass.config.settings import ServerTlsSettings
from logclass.secrets import SecurityConfigError, tls_files

# Kubelet probes and load balancers check health without credentials.
_OPEN_METHODS = ("/grpc.health.v1.Health/",)
ADMIN_METHODS = "/logclass.v1.Admin/"


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def server_credentials(tls: ServerTlsSettings) -> grpc.ServerCredentials | None:
    files = tls_files(tls, "server")
    if files is None:
        return None
    cert, key, client_ca = files
    root = _read(client_ca, "server.tls.client_ca_file") if client_ca else None
    return grpc.ssl_server_credentials(
        [(_read(key, "server.tls.key_file"), _read(cert, "server.tls.cert_file"))],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(abort, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    return grpc.stream_stream_rpc_method_handler(abort, **kwargs)


def _bearer(token: str | None) -> bytes | None:
    return f"Bearer {token}".encode() if token else None


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Requires ``authorization: Bearer <token>`` on every call except health checks: the admin
    token on the Admin service, the callers' token (if any) on the rest. Two tokens, because
    every shipper holds the callers' one and must not be able to reload or teach the server."""

    def __init__(self, token: str | None, admin_token: str | None = None) -> None:
        self._expected = _bearer(token)
        self._admin = _bearer(admin_token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_METHODS):
            return handler
        admin = details.method.startswith(ADMIN_METHODS)
        expected = self._admin if admin else self._expected
        if expected is None:
            return handler
        metadata = dict(details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given_bytes, expected):
            return handler
        setting = "server.admin_auth" if admin else "server.auth"
        return _denied(handler, f"missing or wrong bearer token (metadata authorization; {setting})")
