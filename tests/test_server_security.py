"""TLS, mutual TLS and bearer-token auth against a real server with test certificates."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import free_port, start_server

TOKEN = "s3cret-token-for-tests"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(d: Path) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=logclass test CA",
        cwd=d,
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    d = tmp_path_factory.mktemp("certs")
    _make_certs(d)
    (d / "token").write_text(TOKEN + "\n")
    address = f"127.0.0.1:{free_port()}"
    env = {
        "LOGCLASS_SERVER__TLS__CERT_FILE": str(d / "server.pem"),
        "LOGCLASS_SERVER__TLS__KEY_FILE": str(d / "server.key"),
        "LOGCLASS_SERVER__TLS__CLIENT_CA_FILE": str(d / "ca.pem"),
        "LOGCLASS_SERVER__AUTH__TOKEN_FILE": str(d / "token"),
        "LOGCLASS_SERVER__METRICS_LISTEN": "null",
    }
    proc = start_server(address, env, _creds(d, client_cert=True))
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
