"""TLS, mutual TLS and bearer-token auth against a real server with test certificates."""

from __future__ import annotations

import functools
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.certs import make_certs
from tests.conftest import free_port, start_server

TOKEN = "s3cret-token-for-tests"


@functools.cache
def https_address() -> str:
    """The HTTPS front end's address, picked when the server starts (a port picked at
    import could be taken by another test's server by then)."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    d = tmp_path_factory.mktemp("certs")
    make_certs(d)
    (d / "token").write_text(TOKEN + "\n")
    address = f"127.0.0.1:{free_port()}"
    env = {
        "LOGCLASS_SERVER__TLS__CERT_FILE": str(d / "server.pem"),
        "LOGCLASS_SERVER__TLS__KEY_FILE": str(d / "server.key"),
        "LOGCLASS_SERVER__TLS__CLIENT_CA_FILE": str(d / "ca.pem"),
        "LOGCLASS_SERVER__AUTH__TOKEN_FILE": str(d / "token"),
        "LOGCLASS_SERVER__METRICS_LISTEN": "null",
    }
    proc = start_server(address, env, _creds(d, client_cert=True), flags=["--http-listen", https_address()])
    try:
        yield address, d
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert TOKEN not in err  # the secret is never logged


def _creds(d: Path, client_cert: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.pem").read_bytes(),
        private_key=(d / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(d / "client.pem").read_bytes() if client_cert else None,
    )


def _classify(address: str, creds: grpc.ChannelCredentials, token: str | None) -> pb.ClassifyResponse:
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.secure_channel(address, creds) as channel:
        request = pb.ClassifyRequest(records=[pb.LogRecord(source="s", message="User 12345 logged in.")])
        return pb_grpc.LogClassifierStub(channel).Classify(request, timeout=10, metadata=metadata)


def test_mtls_and_token_round_trip(secure_server: tuple[str, Path]) -> None:
    address, d = secure_server
    assert _classify(address, _creds(d, True), TOKEN).results[0].label == "User Action"


def test_wrong_or_missing_token_is_unauthenticated(secure_server: tuple[str, Path]) -> None:
    address, d = secure_server
    for token in (None, "wrong"):
        with pytest.raises(grpc.RpcError) as err:
            _classify(address, _creds(d, True), token)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_client_without_certificate_is_refused(secure_server: tuple[str, Path]) -> None:
    address, d = secure_server
    with pytest.raises(grpc.RpcError) as err:
        _classify(address, _creds(d, False), TOKEN)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _https(d: Path, client_cert: bool = True) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(d / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
    return httpx.Client(base_url=f"https://{https_address()}", verify=context, timeout=30)


def test_https_takes_the_same_certificates_and_token(secure_server: tuple[str, Path]) -> None:
    _, d = secure_server
    body = {"records": [{"source": "s", "message": "User 12345 logged in."}]}
    bearer = {"authorization": f"Bearer {TOKEN}"}
    with _https(d) as client:
        answer = client.post("/v1/classify", json=body, headers=bearer)
        assert answer.status_code == 200 and answer.json()["results"][0]["label"] == "User Action"
        upload = client.post(
            "/classify", files={"file": ("a.csv", b"source,log_message\ns,User 1 logged in.\n")}, headers=bearer
        )
        assert upload.status_code == 200 and "User Action" in upload.text
        for path, method in (
            ("/v1/classify", "POST"),
            ("/classify", "POST"),
            ("/v1/model", "GET"),
            ("/v1/stats", "GET"),
        ):
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
                refused = client.request(method, path, headers=headers, json=body)
                assert refused.status_code == 401, (path, headers)
                assert refused.headers["www-authenticate"] == "Bearer"
                assert refused.json()["code"] == 16 and "bearer token" in refused.json()["message"]
        # Probes and docs need no token.
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path
        assert "HTTPBearer" in client.get("/openapi.json").json()["components"]["securitySchemes"]


def test_https_refuses_clients_without_a_certificate_or_tls(secure_server: tuple[str, Path]) -> None:
    _, d = secure_server
    with (
        _https(d, client_cert=False) as client,
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
    ):
        client.get("/healthz")
    with httpx.Client(base_url=f"http://{https_address()}", timeout=10) as plain, pytest.raises(httpx.HTTPError):
        plain.get("/healthz")


def test_start_up_hint_matches_the_security_settings() -> None:
    from logclass import config
    from logclass.server.app import how_to_call

    plain = how_to_call(config.load(environ={}).server)
    assert "logclass classify --server 127.0.0.1:50051" in plain
    assert "grpcurl -plaintext -d" in plain
    secured = how_to_call(
        config.load(
            environ={},
            overrides={
                "server": {
                    "tls": {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem"},
                    "auth": {"token": TOKEN},
                }
            },
        ).server
    )
    # Neither the plaintext client line nor the secret itself belongs in a TLS + token hint.
    assert "-plaintext" not in secured and "logclass classify" not in secured
    assert "-cacert CA.pem -cert CLIENT.pem -key CLIENT.key" in secured
    assert "Bearer TOKEN" in secured and TOKEN not in secured


def test_metrics_behind_a_token_and_tls(tmp_path: Path) -> None:
    """The metrics name sources, labels and tiers: server.metrics_auth and server.metrics_tls keep
    them from whoever reaches the port."""
    make_certs(tmp_path)
    (tmp_path / "metrics-token").write_text("m3trics-t0ken\n")
    metrics = f"127.0.0.1:{free_port()}"
    env = {
        "LOGCLASS_SERVER__TLS__CERT_FILE": str(tmp_path / "server.pem"),
        "LOGCLASS_SERVER__TLS__KEY_FILE": str(tmp_path / "server.key"),
        "LOGCLASS_SERVER__METRICS_LISTEN": metrics,
        "LOGCLASS_SERVER__METRICS_AUTH__TOKEN_FILE": str(tmp_path / "metrics-token"),
        "LOGCLASS_SERVER__METRICS_TLS": "true",
        "LOGCLASS_SERVER__HTTP_LISTEN": "null",
        "LOGCLASS_ROUTER__TIERS": "[regex]",
    }
    proc = start_server(f"127.0.0.1:{free_port()}", env, _creds(tmp_path, client_cert=False))
    try:
        verify = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with httpx.Client(verify=verify) as client:
            url = f"https://localhost:{metrics.rpartition(':')[2]}/metrics"
            assert client.get(url).status_code == 401
            assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
            scraped = client.get(url, headers={"Authorization": "Bearer m3trics-t0ken"})
            assert scraped.status_code == 200 and "logclass_records_total" in scraped.text
        with pytest.raises(httpx.HTTPError):  # no plaintext
            httpx.get(f"http://{metrics}/metrics", headers={"Authorization": "Bearer m3trics-t0ken"})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "m3trics-t0ken" not in err
