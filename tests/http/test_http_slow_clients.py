"""Slow and many HTTP clients against a real `logclass serve`: a client sending its headers a byte
at a time is closed after server.http_header_timeout_s, and past server.http_max_connections a
new request is answered 503 while the held connections are open."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port, start_server

HEADER_TIMEOUT_S = 1
MAX_CONNECTIONS = 3


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    port = free_port()
    env = {
        "LOGCLASS_SERVER__METRICS_LISTEN": "null",
        "LOGCLASS_ROUTER__TIERS": "[regex]",
        "LOGCLASS_SERVER__HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "LOGCLASS_SERVER__HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "LOGCLASS_SERVER__MAX_CONCURRENT_UPLOADS": "1",
    }
    proc: subprocess.Popen[str] = start_server(
        f"127.0.0.1:{free_port()}", env, flags=["--http-listen", f"127.0.0.1:{port}"]
    )
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (None: still open after ``seconds``)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


def test_a_client_dribbling_its_headers_is_closed(http_port: int) -> None:
    with socket.create_connection(("127.0.0.1", http_port)) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        closed = _closed_within(slow, HEADER_TIMEOUT_S * 10)
    assert closed is not None, "a half-sent request held its connection"
    with socket.create_connection(("127.0.0.1", http_port)) as silent:
        assert _closed_within(silent, HEADER_TIMEOUT_S * 10) is not None, "a silent connection was held"
    # A request sent whole, and another on the same kept-alive connection, are answered.
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").status_code == 200


def test_past_max_connections_a_new_request_gets_503(http_port: int) -> None:
    held = [socket.create_connection(("127.0.0.1", http_port)) for _ in range(MAX_CONNECTIONS)]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}") as client:
            response = client.get("/healthz")
        assert response.status_code == 503
    finally:
        for sock in held:
            sock.close()
    # Once they are gone (closed by the header deadline at the latest), requests are served again.
    deadline = time.monotonic() + HEADER_TIMEOUT_S * 10
    while time.monotonic() < deadline:
        if httpx.get(f"http://127.0.0.1:{http_port}/healthz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("requests were not served again after the held connections closed")


def test_past_max_concurrent_uploads_one_more_is_refused_before_its_body(http_port: int) -> None:
    """Each upload is spooled to disk until answered: their number bounds the spool folder."""
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\nsource,log_message\r\n'
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{http_port}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body) + 1000}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", http_port)) as uploading:
        uploading.sendall(head + body)  # the rest of its body never comes: it stays in progress
        csv_file = {"file": ("b.csv", b"source,log_message\na,User 1 logged in\n", "text/csv")}
        deadline = time.monotonic() + 10
        while True:
            refused = httpx.post(f"http://127.0.0.1:{http_port}/classify", files=csv_file)
            if refused.status_code == 429 or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the first upload's headers not handled yet
        assert refused.status_code == 429 and "server.max_concurrent_uploads (1)" in refused.text
    deadline = time.monotonic() + 10
    while httpx.post(f"http://127.0.0.1:{http_port}/classify", files=csv_file).status_code != 200:
        assert time.monotonic() < deadline, "uploads were not taken again once the first went away"
        time.sleep(0.05)
