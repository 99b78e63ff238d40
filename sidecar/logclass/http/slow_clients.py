"""Uvicorn's HTTP/1.1 protocol with a deadline on request headers. Uvicorn times out idle
keep-alive connections, but not a client that sends a request's headers a byte at a time
(slowloris): each such connection would be held for ever, and enough of them take every slot of
``server.http_max_connections``. Here the headers of a request must be complete within
``server.http_header_timeout_s`` of the connection or of the request's first byte."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


def with_header_timeout(timeout_s: float) -> type[H11Protocol]:
    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # the headers are in: the request's body and answer have their own limits
            elif self._deadline is None and not self.transport.is_closing():
                self._arm()  # bytes of the next request on a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

    return HeaderDeadline
