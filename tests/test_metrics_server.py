"""The metrics port against hostile peers, on a real server: connections are capped, idle ones
dropped, and a peer that never starts its TLS handshake does not stop the scrapes."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from logclass.engine import metrics_server
from tests.certs import make_certs
from tests.conftest import free_port


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("logclass_probe", "a metric to scrape", registry=registry).inc()
    return registry


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_connections_past_the_cap_are_closed_and_idle_ones_dropped(
    registry: CollectorRegistry, sockets: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_server, "TIMEOUT_S", 3.0)
    port = free_port()
    server = metrics_server.serve_metrics(registry, f"127.0.0.1:{port}", "server.metrics_listen")
    try:
        # One idle connection at a time: each is accepted, then held by its own handler thread.
        for _ in range(metrics_server.MAX_CONNECTIONS):
            sockets.append(socket.create_connection(("127.0.0.1", port)))
        extra = socket.create_connection(("127.0.0.1", port))
        sockets.append(extra)
        assert _closed_by_server(extra, 1.0)  # at once: well before the idle timeout
        assert all(_closed_by_server(s, 10.0) for s in sockets[:-1])  # TIMEOUT_S, then closed
        assert "logclass_probe_total 1.0" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()


def test_a_peer_that_never_says_hello_does_not_stop_tls_scrapes(
    registry: CollectorRegistry, sockets: list[socket.socket], tmp_path: Path
) -> None:
    make_certs(tmp_path)
    port = free_port()
    server = metrics_server.serve_metrics(
        registry,
        f"127.0.0.1:{port}",
        "server.metrics_listen",
        token="t0ken",
        tls=(str(tmp_path / "server.pem"), str(tmp_path / "server.key")),
    )
    try:
        sockets.append(socket.create_connection(("127.0.0.1", port)))  # TCP only: no ClientHello
        verify = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        url = f"https://localhost:{port}/metrics"
        with httpx.Client(verify=verify, timeout=5) as client:
            assert client.get(url).status_code == 401
            scraped = client.get(url, headers={"Authorization": "Bearer t0ken"})
        assert scraped.status_code == 200 and "logclass_probe_total" in scraped.text
    finally:
        for sock in sockets:  # a handshake stuck in the accept loop would keep shutdown() waiting
            sock.close()
        server.shutdown()
