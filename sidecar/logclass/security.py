"""Transport security the front ends share: gRPC server credentials from a ``*.tls`` section,
uvicorn's TLS options from the same files, the bearer-token gRPC interceptor and the
constant-time token compare every front end checks a bearer token with.

Below the front ends (which may not import each other): the gRPC and HTTP front ends and the
OTLP receivers take these from here."""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from logclass.config.settings import ServerTlsSettings
from logclass.secrets import SecurityConfigError, tls_files

# Kubelet probes and load balancers check health without credentials.
OPEN_METHODS = ("/grpc.health.v1.Health/",)


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def server_credentials(tls: ServerTlsSettings, section: str = "server") -> grpc.ServerCredentials | None:
    """TLS credentials of a gRPC server from ``{section}.tls`` (mutual when ``client_ca_file``
    is given); None: plaintext."""
    files = tls_files(tls, section)
    if files is None:
        return None
    cert, key, client_ca = files
    root = read_file(client_ca, f"{section}.tls.client_ca_file") if client_ca else None
    return grpc.ssl_server_credentials(
        [(read_file(key, f"{section}.tls.key_file"), read_file(cert, f"{section}.tls.cert_file"))],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def uvicorn_tls(files: tuple[str, str, str | None] | None) -> dict[str, Any]:
    """uvicorn.Config's ``ssl_*`` options from ``tls_files``: TLS with the certificate and key,
    client certificates required (mTLS) when a client CA is given; plaintext for None."""
    cert, key, client_ca = files or (None, None, None)
    return {
        "ssl_certfile": cert,
        "ssl_keyfile": key,
        "ssl_ca_certs": client_ca,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
    }


def tls_mode(files: tuple[str, str, str | None] | None) -> str:
    """``off``, ``on`` or ``mutual``, for the start-up lines."""
    return "off" if files is None else "mutual" if files[2] else "on"


def bearer(token: str | None) -> bytes | None:
    """The ``authorization`` value a caller holding ``token`` sends; None: no token required."""
    return f"Bearer {token}".encode() if token else None


def token_matches(given: str | bytes, expected: bytes) -> bool:
    """Constant-time: how long the compare takes does not tell a caller how much it got right."""
    given_bytes = given.encode() if isinstance(given, str) else bytes(given)
    return hmac.compare_digest(given_bytes, expected)


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


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Requires ``authorization: Bearer <token>`` on every call except health checks: the admin
    token on the methods under ``admin_prefix``, the callers' token (if any) on the rest. Two
    tokens, because every shipper holds the callers' one and must not be able to reload or
    teach the server. ``setting`` and ``admin_setting`` name the settings in the refusal."""

    def __init__(
        self,
        token: str | None,
        admin_token: str | None = None,
        *,
        setting: str = "server.auth",
        admin_prefix: str | None = None,
        admin_setting: str = "server.admin_auth",
    ) -> None:
        self._expected = bearer(token)
        self._admin = bearer(admin_token)
        self._admin_prefix = admin_prefix
        self._setting = setting
        self._admin_setting = admin_setting

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHODS):
            return handler
        admin = self._admin_prefix is not None and details.method.startswith(self._admin_prefix)
        expected = self._admin if admin else self._expected
        if expected is None:
            return handler
        metadata = dict(details.invocation_metadata or ())
        if token_matches(metadata.get("authorization", ""), expected):
            return handler
        setting = self._admin_setting if admin else self._setting
        return _denied(handler, f"missing or wrong bearer token (metadata authorization; {setting})")
