"""What stands in front of the routes: the bearer token, request-size limits, response counts."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from logclass.http.errors import status_response
from logclass.security import token_matches
from logclass.service.classifier import ApiError, Code

_bearer = HTTPBearer(auto_error=False, description="server.auth: `Authorization: Bearer <token>`")


def token_guard(token: str) -> Any:
    """A dependency that refuses calls without ``Authorization: Bearer <token>`` (UNAUTHENTICATED)."""
    expected = token.encode()

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:  # noqa: B008
        given = credentials.credentials if credentials is not None else ""
        if not token_matches(given, expected):
            raise ApiError(Code.UNAUTHENTICATED, "missing or wrong bearer token (header Authorization: Bearer TOKEN)")

    return Depends(require_token)


class BodyLimit:
    """Refuses a request body larger than its path's limit with 413, before the route reads it:
    at once when Content-Length says so, else as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], tuple[int, str]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send, limit, setting)
            return
        seen, over = 0, False

        async def limited() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # The route sees the client go away; its answer is dropped for the 413.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def unless_over(message: Message) -> None:
            if not over:
                await send(message)

        try:
            await self.app(scope, limited, unless_over)
        except Exception:
            if not over:
                raise
        if over:
            await self._refuse(scope, receive, send, limit, setting)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int, setting: str) -> None:
        message = (
            f"the request body is larger than {setting} ({limit:,} bytes): split the input, "
            f"or raise {setting} in the sidecar's config"
        )
        await status_response(Code.RESOURCE_EXHAUSTED, message, 413)(scope, receive, send)


# Names a browser on this machine uses for a loopback listener.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(value: str) -> str:
    """The host of a Host header or an origin's netloc, without port or IPv6 brackets."""
    return urlsplit("//" + value).hostname or ""


class SameOrigin:
    """Without a token, a web page on any site could POST a CSV to the loopback listener (a
    multipart form is a simple cross-origin request) or reach it under its own name by DNS
    rebinding. So, when the listener is on loopback, a request must name a loopback host; and any
    unsafe request a browser marks cross-site, or whose Origin is not the host it was sent to, is
    refused (403). Clients that are not browsers send neither header and pass."""

    def __init__(self, app: ASGIApp, listen_host: str) -> None:
        self.app = app
        self.loopback = is_loopback(listen_host.strip("[]"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reason = self.refusal(scope)
        if reason:
            message = f"{reason}: without server.auth, only pages served by this sidecar may call it"
            await status_response(Code.PERMISSION_DENIED, message, 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str:
        headers = {name: value.decode("latin-1") for name, value in scope["headers"]}
        host = headers.get(b"host", "")
        if self.loopback and not is_loopback(_host_of(host)):
            return f"Host {host!r} is not a loopback name"
        if scope["method"] not in _UNSAFE:
            return ""
        site = headers.get(b"sec-fetch-site", "")
        if site in ("cross-site", "same-site"):
            return f"a {site} request"
        origin = headers.get(b"origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return f"Origin {origin!r} is not this sidecar ({host})"
        return ""


class UploadGate:
    """At most ``limit`` CSV uploads at once: each is spooled to disk as it arrives (up to
    server.max_upload_bytes) and held until its answer is sent, so the bound on the spool folder
    is ``limit`` x max_upload_bytes. One more is refused at once, before its body is read."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], limit: int) -> None:
        self.app = app
        self.paths = paths
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            message = f"server.max_concurrent_uploads ({self.limit}) uploads are in progress; retry when one is done"
            await status_response(Code.RESOURCE_EXHAUSTED, message, 429)(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class ResponseCounter:
    """``logclass_http_responses_total{route, code}``: HTTP answers by route template and status."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry, routes: Callable[[], set[str]]) -> None:
        self.app = app
        # Route templates, for answers given before routing (a 413): their path is the route's.
        # Read on first use: the app's routes are all added by then and never change after.
        self.routes = routes
        self._known: set[str] | None = None
        self.responses = Counter(
            "logclass_http_responses", "HTTP responses by route and status code", ["route", "code"], registry=registry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                if self._known is None:
                    self._known = self.routes()
                route = scope["path"] if scope["path"] in self._known else "unmatched"
            self.responses.labels(route, str(status)).inc()
