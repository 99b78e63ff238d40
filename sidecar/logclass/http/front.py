"""The HTTP front end's life: listen before the models load (/readyz answers 503 meanwhile),
serve on the event loop gRPC runs on, drain on stop. Uvicorn serves; this process owns the
signals and the socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn

from logclass.address import split_host_port
from logclass.config.settings import Settings
from logclass.engine.runtime import SwapStep
from logclass.http import HttpServeError
from logclass.http.app import build_app
from logclass.http.slow_clients import with_header_timeout
from logclass.secrets import SecurityConfigError, load_token, tls_files
from logclass.security import uvicorn_tls
from logclass.service.classifier import ClassifierService


class _EmbeddedServer(uvicorn.Server):
    """Uvicorn without its signal handlers (`logclass serve` drains every front end on SIGTERM)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class HttpFrontEnd:
    def __init__(self, settings: Settings, service: ClassifierService) -> None:
        self.settings = settings
        server = settings.server
        assert server.http_listen, "HttpFrontEnd needs server.http_listen"
        self.address = server.http_listen
        self.host, self.port = split_host_port(self.address, "server.http_listen")
        self.token = load_token(server.auth)
        self.tls = tls_files(server.tls, "server")
        self.app = build_app(settings, service, self.token)
        self.config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=max(1, round(server.grace_seconds)),
            http=with_header_timeout(server.http_header_timeout_s),
            # Past it a new request is answered 503 (connections held idle count too).
            limit_concurrency=server.http_max_connections,
            **uvicorn_tls(self.tls),
        )
        try:
            self.config.load()
        except (OSError, ssl.SSLError) as exc:
            raise SecurityConfigError(f"server.tls: cannot load the certificate, key or client CA: {exc}") from exc
        # Uvicorn's own lines ("Started server process", ...) would repeat what serve logs.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self.server = _EmbeddedServer(self.config)
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        scheme = "https" if self.tls else "http"
        mutual = ", mutual TLS" if self.tls and self.tls[2] else ""
        token = "required" if self.token else "off"
        return f"HTTP on {scheme}://{self.address} (console /, docs /docs{mutual}, token {token})"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host or "0.0.0.0", self.port), family=family, backlog=2048)
        except OSError as exc:
            raise HttpServeError(
                f"cannot listen on {self.address} (server.http_listen): {exc.strerror}; is another server "
                "using it? Set another port, or null to turn HTTP off"
            ) from exc
        # Accepted connections inherit it. asyncio sets it only on sockets made with IPPROTO_TCP,
        # which create_server's are not: with Nagle on, each body waited ~40 ms for the client's
        # delayed ACK of the headers.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    async def start(self) -> None:
        sock = self._bind()
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="http-front-end")
        listening = asyncio.create_task(self.server.listening.wait())
        await asyncio.wait([self._task, listening], return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if self._task.done():
            self._task.result()  # uvicorn's own failure, raised here
            raise HttpServeError(f"the HTTP server on {self.address} stopped as it started; see the log above")

    async def serving(self) -> None:
        """Nothing to switch: /readyz and every call read the runtime."""

    def how_to_call(self) -> str:
        return how_to_call(self.settings)

    def on_swap(self, settings: Settings) -> SwapStep | None:
        return None  # every call reads the runtime: nothing here holds what a reload changes

    async def stop(self, grace_s: float) -> None:
        """``grace_s``: server.grace_seconds, which uvicorn was given at start."""
        if self._task is None:
            return
        # Uvicorn stops accepting, then gives open requests timeout_graceful_shutdown to finish.
        self.server.should_exit = True
        await self._task


def how_to_call(settings: Settings) -> str:
    server = settings.server
    if not server.http_listen:
        return ""
    scheme = "https" if server.tls.cert_file else "http"
    auth = " -H 'authorization: Bearer TOKEN'" if load_token(server.auth) else ""
    tls = " --cacert CA.pem" if server.tls.cert_file else ""
    if server.tls.client_ca_file:
        tls += " --cert CLIENT.pem --key CLIENT.key"
    url = f"{scheme}://{server.http_listen}"
    return "\n".join(
        [
            f"  curl{tls}{auth} -F file=@logs.csv {url}/classify",
            f"  console {url}/   API docs {url}/docs",
        ]
    )
