"""The HTTP app's answers before the models load and while draining, and its start-up failures:
the real app and service, without an engine."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from logclass import config
from logclass.engine.metrics import Metrics
from logclass.engine.pipeline import build_engine
from logclass.engine.runtime import Runtime
from logclass.http import HttpServeError
from logclass.http.app import build_app
from logclass.http.front import HttpFrontEnd, how_to_call
from logclass.secrets import SecurityConfigError
from logclass.service.classifier import Budgets, ClassifierService, ClassifyCall
from tests.conftest import free_port


def _service(settings: config.Settings) -> ClassifierService:
    return ClassifierService(Runtime(settings, Metrics()))


def _client(token: str | None = None) -> tuple[TestClient, ClassifierService]:
    settings = config.load(environ={})
    service = _service(settings)
    # The listener is on loopback (server.http_listen's default): a request names a loopback host.
    return TestClient(build_app(settings, service, token), base_url="http://127.0.0.1"), service


def test_not_ready_until_attached_and_again_once_draining() -> None:
    client, service = _client()
    assert client.get("/healthz").json() == {"status": "NOT_SERVING"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json() == {"status": "NOT_SERVING"}
    for response in (
        client.post("/v1/classify", json={"records": [{"source": "s", "message": "m"}]}),
        client.get("/v1/model"),
        client.post("/classify", files={"file": ("a.csv", b"source,log_message\ns,m\n")}),
    ):
        assert response.status_code == 503
        assert response.json() == {"code": 14, "message": "models are still loading; retry shortly", "details": []}
    settings = config.load(environ={}, overrides={"router": {"tiers": ["regex"]}})
    engine = build_engine(settings)
    service.runtime.attach(engine, None)
    assert client.get("/readyz").status_code == 200
    answer = client.post("/v1/classify", json={"records": [{"source": "s", "message": "User 1 logged in."}]})
    assert answer.json()["results"][0]["label"] == "User Action"
    service.runtime.drain()
    assert client.get("/readyz").status_code == 503 and client.get("/healthz").status_code == 200
    refused = client.get("/v1/model")
    assert refused.status_code == 503 and "shutting down" in refused.json()["message"]


def test_a_token_guards_the_api_but_not_health_or_docs() -> None:
    client, _ = _client(token="t0k")
    # With a token the caller is known: no origin or host check (a script elsewhere may hold it).
    elsewhere = {"authorization": "Bearer t0k", "Host": "sidecar.example", "Origin": "https://ci.example"}
    assert client.get("/v1/stats", headers=elsewhere).status_code == 200
    assert client.get("/v1/stats").status_code == 401
    assert client.get("/v1/stats", headers={"authorization": "Bearer t0k"}).status_code == 200
    for path in ("/healthz", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    assert client.get("/readyz").status_code == 503


def test_a_busy_port_names_the_setting() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = config.load(environ={}, overrides={"server": {"http_listen": f"127.0.0.1:{port}"}})
        front = HttpFrontEnd(settings, _service(settings))
        with pytest.raises(HttpServeError, match=rf"cannot listen on 127.0.0.1:{port} \(server.http_listen\)"):
            asyncio.run(front.start())


def test_unreadable_tls_files_name_the_setting(tmp_path: Path) -> None:
    settings = config.load(
        environ={},
        overrides={"server": {"tls": {"cert_file": str(tmp_path / "no.pem"), "key_file": str(tmp_path / "no.key")}}},
    )
    with pytest.raises(SecurityConfigError, match=r"server\.tls: cannot load"):
        HttpFrontEnd(settings, _service(settings))


def test_start_up_hint_follows_the_settings() -> None:
    plain = how_to_call(config.load(environ={}))
    assert "curl -F file=@logs.csv http://127.0.0.1:8000/classify" in plain
    secured = how_to_call(
        config.load(
            environ={},
            overrides={
                "server": {
                    "tls": {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem"},
                    "auth": {"token": "secret"},
                }
            },
        )
    )
    assert "--cacert CA.pem --cert CLIENT.pem --key CLIENT.key" in secured and "https://" in secured
    assert "Bearer TOKEN" in secured and "secret" not in secured
    assert how_to_call(config.load(environ={}, overrides={"server": {"http_listen": None}})) == ""


def test_the_listener_turns_nagle_off() -> None:
    # Without TCP_NODELAY each response body waited ~40 ms for the client's delayed ACK.
    settings = config.load(environ={}, overrides={"server": {"http_listen": f"127.0.0.1:{free_port()}"}})
    front = HttpFrontEnd(settings, _service(settings))
    with front._bind() as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest.mark.parametrize(
    ("budget_ms", "wait_for_all", "time_remaining", "expected"),
    [
        (None, False, None, 0.25),  # the inline budget
        (None, True, None, 300.0),  # waitForAll over HTTP: bounded by server.max_wait_ms
        (5_000_000, False, None, 300.0),  # a caller's own budget cannot pass it either
        (None, True, 10.0, 9.9),  # a gRPC deadline, less the margin
        (None, False, 0.05, 0.0),
    ],
)
def test_every_request_has_a_deadline(
    budget_ms: int | None, wait_for_all: bool, time_remaining: float | None, expected: float
) -> None:
    call = ClassifyCall([], [], budget_ms=budget_ms, wait_for_all=wait_for_all)
    assert Budgets(0.25, 0.1, 300.0).for_request(call, time_remaining) == pytest.approx(expected)


def test_an_upload_goes_through_the_runtime_in_calls_within_max_records() -> None:
    """Uploads classify through the runtime like every front end: their chunks never pass
    server.max_records_per_request (the bound of any one call), and their decisions are counted."""
    settings = config.load(
        environ={}, overrides={"router": {"tiers": ["regex"]}, "server": {"max_records_per_request": 3}}
    )
    service = _service(settings)
    engine = build_engine(settings)
    sizes: list[int] = []
    real = engine.classify

    async def observed(records: Any, budget_s: float | None, owner: Any = None) -> Any:
        sizes.append(len(records))
        return await real(records, budget_s, owner)

    engine.classify = observed  # type: ignore[method-assign]
    service.runtime.attach(engine, None)
    client = TestClient(build_app(settings, service, None), base_url="http://127.0.0.1")
    body = "source,log_message\n" + "".join(f"billing,User {i} logged in.\n" for i in range(10))
    answer = client.post("/classify", files={"file": ("a.csv", body.encode())})
    assert answer.status_code == 200, answer.text
    assert answer.text.count("User Action") == 10
    assert sum(sizes) == 10 and max(sizes) <= 3
    assert service.metrics.snapshot().records[("regex", "User Action")] == 10
