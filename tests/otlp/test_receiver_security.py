"""The OTLP receivers' TLS, mutual TLS and bearer token (otlp.tls, otlp.auth), over OTLP/gRPC and
OTLP/HTTP, with the repo's test CA (tests/certs.py): TLS clients get through and plaintext ones
do not; under mTLS a client without a certificate is refused; a token is required (missing or
wrong: UNAUTHENTICATED / 401 with ``WWW-Authenticate: Bearer``, nothing reaches the sink) and the
right one accepted, compared in constant time; bad settings name the otlp setting."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ssl
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from prometheus_client import CollectorRegistry

from logclass.config.settings import OtlpSettings, ServerAuthSettings, ServerTlsSettings
from logclass.otlp.metrics import OtlpMetrics
from logclass.otlp.receiver import OtlpGrpcReceiver, OtlpHttpReceiver
from logclass.secrets import SecurityConfigError
from tests.certs import make_certs
from tests.otlp.test_receiver import (
    JSON,
    PROTOBUF,
    SETTINGS,
    FakeEngine,
    MemorySink,
    Running,
    _request,
    _status_of,
    _tagger,
    receivers,
)

TOKEN = "otlp-s3cret-for-tests"
REQUEST = _request("login failed for user alice")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("otlp-certs")
    make_certs(d)
    return d


def _settings(
    d: Path | None = None, mutual: bool = False, token: str | None = None, token_file: Path | None = None
) -> OtlpSettings:
    tls = ServerTlsSettings(
        cert_file=str(d / "server.pem") if d else None,
        key_file=str(d / "server.key") if d else None,
        client_ca_file=str(d / "ca.pem") if d and mutual else None,
    )
    auth = ServerAuthSettings(token=token, token_file=str(token_file) if token_file else None)
    return dataclasses.replace(SETTINGS, tls=tls, auth=auth)


def _channel_creds(d: Path, client_cert: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.pem").read_bytes(),
        private_key=(d / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(d / "client.pem").read_bytes() if client_cert else None,
    )


async def _export(
    running: Running, creds: grpc.ChannelCredentials | None = None, token: str | None = None, header: str = ""
) -> ExportLogsServiceResponse:
    target = f"127.0.0.1:{running.grpc_port}"
    channel = grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target)
    value = header or (f"Bearer {token}" if token else "")
    metadata = (("authorization", value),) if value else None
    async with channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        response: ExportLogsServiceResponse = await stub.Export(REQUEST, timeout=10, metadata=metadata)
        return response


def _context(d: Path, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(d / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
    return context


async def _post(
    running: Running,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
    headers: dict[str, str] | None = None,
    content_type: str = PROTOBUF,
) -> httpx.Response:
    body = REQUEST.SerializeToString()
    async with httpx.AsyncClient(verify=verify, timeout=10) as client:
        return await client.post(
            f"{scheme}://127.0.0.1:{running.http_port}/v1/logs",
            content=body,
            headers={"content-type": content_type, **(headers or {})},
        )


# -- TLS and mutual TLS ----------------------------------------------------------------------------


def test_grpc_over_tls_and_not_plaintext(certs: Path) -> None:
    async def go() -> None:
        async with receivers(settings=_settings(certs)) as running:
            assert await _export(running, _channel_creds(certs, client_cert=False)) == ExportLogsServiceResponse()
            assert len(running.sink.accepted) == 1
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _export(running)  # plaintext to a TLS listener
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert len(running.sink.accepted) == 1

    asyncio.run(go())


def test_grpc_mutual_tls_refuses_a_client_without_a_certificate(certs: Path) -> None:
    async def go() -> None:
        async with receivers(settings=_settings(certs, mutual=True)) as running:
            assert await _export(running, _channel_creds(certs, client_cert=True)) == ExportLogsServiceResponse()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _export(running, _channel_creds(certs, client_cert=False))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert len(running.sink.accepted) == 1

    asyncio.run(go())


def test_http_over_tls_and_not_plaintext(certs: Path) -> None:
    async def go() -> None:
        async with receivers(settings=_settings(certs)) as running:
            answer = await _post(running, "https", _context(certs, client_cert=False))
            assert answer.status_code == 200, answer.text
            assert ExportLogsServiceResponse.FromString(answer.content) == ExportLogsServiceResponse()
            with pytest.raises(httpx.HTTPError):
                await _post(running, "http")  # plaintext to a TLS listener
            with pytest.raises(httpx.ConnectError):
                await _post(running, "https", True)  # the test CA is not a system CA
            assert len(running.sink.accepted) == 1

    asyncio.run(go())


def test_http_mutual_tls_refuses_a_client_without_a_certificate(certs: Path) -> None:
    async def go() -> None:
        async with receivers(settings=_settings(certs, mutual=True)) as running:
            answer = await _post(running, "https", _context(certs, client_cert=True))
            assert answer.status_code == 200, answer.text
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                await _post(running, "https", _context(certs, client_cert=False))
            assert len(running.sink.accepted) == 1

    asyncio.run(go())


# -- the bearer token ------------------------------------------------------------------------------


def test_grpc_token_required_refused_and_accepted(certs: Path) -> None:
    async def go() -> None:
        async with receivers(settings=_settings(certs, mutual=True, token=TOKEN)) as running:
            creds = _channel_creds(certs, client_cert=True)
            for kwargs in ({}, {"token": "wrong"}, {"header": TOKEN}, {"token": TOKEN + "x"}):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await _export(running, creds, **kwargs)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, kwargs
                assert "otlp.auth" in (err.value.details() or "")
            assert running.sink.accepted == [] and running.engine.calls == []
            assert await _export(running, creds, token=TOKEN) == ExportLogsServiceResponse()
            assert len(running.sink.accepted) == 1

    asyncio.run(go())


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_http_token_required_refused_and_accepted(content_type: str) -> None:
    async def go() -> None:
        async with receivers(settings=_settings(token=TOKEN)) as running:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
                answer = await _post(running, headers=headers, content_type=content_type)
                assert answer.status_code == 401, headers
                assert answer.headers["www-authenticate"] == "Bearer"
                code, message = _status_of(answer)
                assert code == 16 and "bearer token" in message and "otlp.auth" in message
            assert running.sink.accepted == [] and running.engine.calls == []
            # The refused bodies were never read: the token is checked first. An empty JSON request is OTLP.
            body = REQUEST.SerializeToString() if content_type == PROTOBUF else b"{}"
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(
                    f"http://127.0.0.1:{running.http_port}/v1/logs",
                    content=body,
                    headers={"content-type": content_type, "authorization": f"Bearer {TOKEN}"},
                )
            assert answer.status_code == 200, answer.text
            assert len(running.sink.accepted) == 1

    asyncio.run(go())


def test_http_token_over_mutual_tls_and_the_refusals_counted(certs: Path, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    settings = _settings(certs, mutual=True, token_file=tmp_path / "token")
    metrics = OtlpMetrics(CollectorRegistry())
    sink = MemorySink()
    receiver = OtlpHttpReceiver(settings, _tagger(FakeEngine(), settings), sink, "127.0.0.1:0", metrics=metrics)

    async def go() -> None:
        port = await receiver.start()
        try:
            async with httpx.AsyncClient(verify=_context(certs, client_cert=True), timeout=10) as client:
                url = f"https://127.0.0.1:{port}/v1/logs"
                body = REQUEST.SerializeToString()
                refused = await client.post(url, content=body, headers={"content-type": PROTOBUF})
                accepted = await client.post(
                    url, content=body, headers={"content-type": PROTOBUF, "authorization": f"Bearer {TOKEN}"}
                )
        finally:
            await receiver.stop(1.0)
        assert (refused.status_code, accepted.status_code) == (401, 200)

    asyncio.run(go())
    assert len(sink.accepted) == 1
    assert metrics.requests_rejected.labels("http", "unauthenticated")._value.get() == 1


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    async def go() -> None:
        async with receivers(settings=_settings(token=TOKEN)) as running:
            with pytest.raises(grpc.aio.AioRpcError):
                await _export(running, token="guess-grpc")
            assert (await _post(running, headers={"authorization": "Bearer guess-http"})).status_code == 401

    asyncio.run(go())
    expected = f"Bearer {TOKEN}".encode()
    assert (b"Bearer guess-grpc", expected) in seen
    assert (b"Bearer guess-http", expected) in seen


# -- settings and start-up lines -------------------------------------------------------------------


def _both(settings: OtlpSettings) -> tuple[OtlpGrpcReceiver, OtlpHttpReceiver]:
    tagger = _tagger(FakeEngine(), settings)
    sink = MemorySink()
    return (
        OtlpGrpcReceiver(settings, tagger, sink, "127.0.0.1:0"),
        OtlpHttpReceiver(settings, tagger, sink, "127.0.0.1:0"),
    )


@pytest.mark.parametrize(
    ("mutual", "token", "tls_word", "token_word"),
    [(None, None, "off", "off"), (False, TOKEN, "on", "required"), (True, None, "mutual", "off")],
)
def test_describe_reports_tls_and_token(
    certs: Path, mutual: bool | None, token: str | None, tls_word: str, token_word: str
) -> None:
    settings = _settings(certs if mutual is not None else None, mutual=bool(mutual), token=token)

    async def make() -> tuple[OtlpGrpcReceiver, OtlpHttpReceiver]:
        return _both(settings)  # a grpc.aio server is made on a loop

    g, h = asyncio.run(make())
    assert g.describe().endswith(f"(tls {tls_word}, token {token_word})")
    assert h.describe().endswith(f"(tls {tls_word}, token {token_word})")
    assert h.describe().startswith("OTLP/HTTP on https://" if mutual is not None else "OTLP/HTTP on http://")
    assert TOKEN not in g.describe() + h.describe()


def test_bad_security_settings_name_the_otlp_setting(certs: Path, tmp_path: Path) -> None:
    half = dataclasses.replace(SETTINGS, tls=ServerTlsSettings(str(certs / "server.pem"), None, None))
    missing = dataclasses.replace(
        SETTINGS, tls=ServerTlsSettings(str(tmp_path / "no.pem"), str(tmp_path / "no.key"), None)
    )
    (tmp_path / "token").write_text(TOKEN)
    both = dataclasses.replace(SETTINGS, auth=ServerAuthSettings(TOKEN, str(tmp_path / "token")))
    cases: list[tuple[OtlpSettings, str]] = [
        (half, r"otlp\.tls needs both cert_file and key_file"),
        (missing, r"otlp\.tls"),
        (both, r"otlp\.auth\.token or otlp\.auth\.token_file"),
    ]

    async def go() -> None:
        for settings, pattern in cases:
            for make in (OtlpGrpcReceiver, OtlpHttpReceiver):
                with pytest.raises(SecurityConfigError, match=pattern):
                    make(settings, _tagger(FakeEngine(), settings), MemorySink(), "127.0.0.1:0")

    asyncio.run(go())


def test_server_and_http_front_ends_keep_their_setting_names() -> None:
    """The interceptor moved below the front ends; the gRPC front end's refusals still name
    server.auth and server.admin_auth."""
    from logclass.security import BearerTokenInterceptor
    from logclass.server.app import ADMIN_METHODS

    async def refusal(method: str) -> Any:
        interceptor = BearerTokenInterceptor("a", "b", admin_prefix=ADMIN_METHODS)

        async def continuation(details: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(lambda r, c: r)

        details: Any = type("D", (), {"method": method, "invocation_metadata": ()})()
        return await interceptor.intercept_service(continuation, details)

    class Context:
        message = ""

        async def abort(self, code: grpc.StatusCode, message: str) -> None:
            self.message = message

    async def go() -> tuple[str, str]:
        out = []
        for method in ("/logclass.v1.LogClassifier/Classify", f"{ADMIN_METHODS}Reload"):
            handler = await refusal(method)
            context = Context()
            await handler.unary_unary(None, context)
            out.append(context.message)
        return out[0], out[1]

    plain, admin = asyncio.run(go())
    assert plain.endswith("server.auth)") and admin.endswith("server.admin_auth)")
