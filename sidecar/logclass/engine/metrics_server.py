"""Prometheus /metrics on its own port, plain, or behind a bearer
token (``server.metrics_auth``) and TLS (``server.metrics_tls``, with ``server.tls``'s
certificate): the metrics name labels, sources and tiers, which not every network peer should read."""

from __future__ import annotations

import hmac
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from logclass.address import split_host_port

StartResponse = Callable[..., Any]


# Scrapers are a few Prometheus servers: past this many connections at once a new one is closed,
# and one that sends nothing for the timeout is dropped, so idle or slow peers (slowloris) cannot
# pile up threads. Its TLS handshake runs in its own thread under the same timeout, not in the
# accept loop, where one peer that never sent a ClientHello stopped every scrape.
MAX_CONNECTIONS = 16
TIMEOUT_S = 10.0


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Quiet(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(TIMEOUT_S)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _guarded(app: Callable[..., Iterable[bytes]], token: str) -> Callable[..., Iterable[bytes]]:
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
            return [b"missing or wrong bearer token (server.metrics_auth): Authorization: Bearer TOKEN\n"]
        return app(environ, start_response)

    return guarded


def serve_metrics(
    registry: CollectorRegistry,
    listen: str,
    setting: str,
    *,
    token: str | None = None,
    tls: tuple[str, str] | None = None,
) -> WSGIServer:
    """Serves ``registry`` on ``listen`` from a daemon thread; ``tls``: (cert_file, key_file).
    Returns the server (``shutdown()`` stops it)."""
    host, port = split_host_port(listen, setting)
    app = make_wsgi_app(registry)
    if token is not None:
        app = _guarded(app, token)
    server_class: type[WSGIServer] = _Server
    if ":" in host:
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    httpd = make_server(host, port, app, server_class, handler_class=_Quiet)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=httpd.serve_forever, name="logclass-metrics", daemon=True).start()
    return httpd
