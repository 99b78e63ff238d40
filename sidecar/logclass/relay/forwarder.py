"""Sends the buffered chunks to the upstream and deletes each only once the upstream acked it.

Upstreams are tried in the configured order: the first that accepts a connection (and, when it
has a shared key, the handshake) gets the traffic. Up to ``max_inflight_chunks`` chunks are written
on the connection before their acks are awaited. Any failure (refused connection, handshake, no
ack within ``ack_timeout_s``, a closed connection) gives the chunks back to the front of the queue,
closes the connection and retries after an exponential backoff, from the first upstream again.
While on a fallback upstream the preferred ones are tried again every ``failback_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from logclass.core.backoff import Backoff
from logclass.errors import LogclassError
from logclass.relay import auth
from logclass.relay.buffer import ChunkFile, DiskBuffer
from logclass.relay.metrics import RelayMetrics
from logclass.relay.protocol import DecodeLimits, ObjectBudget, ProtocolError, parse_ack, unpacker
from logclass.relay.settings import RelaySettings, Upstream
from logclass.relay.tls import client_context

log = logging.getLogger("logclass.relay.forwarder")

_READ_BYTES = 64 * 1024
# Acks and handshake messages are tiny; anything bigger is not a Forward server talking.
_MAX_RESPONSE_BYTES = 1024 * 1024
_NORMAL, _HEAD, _NEXT = "normal", "head", "next"
_RESPONSE_LIMITS = DecodeLimits(_MAX_RESPONSE_BYTES, max_objects=1024, max_container_len=64)


class UpstreamError(LogclassError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Connection:
    upstream: Upstream
    rank: int  # position in relay.upstreams: 0 is the preferred one
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    keepalive: bool = True
    opened: float = field(default_factory=time.monotonic)
    budget: ObjectBudget = field(default_factory=lambda: ObjectBudget(_RESPONSE_LIMITS.max_objects))
    decoder: Any = None

    def __post_init__(self) -> None:
        self.decoder = unpacker(_RESPONSE_LIMITS, self.budget)


class Forwarder:
    def __init__(self, buffer: DiskBuffer, settings: RelaySettings, metrics: RelayMetrics) -> None:
        self.buffer = buffer
        self.settings = settings
        self.metrics = metrics
        self._contexts = {u.name: client_context(u.tls, u.name) for u in settings.upstreams if u.tls is not None}
        self._task: asyncio.Task[None] | None = None
        self._conn: _Connection | None = None
        self._sending = False
        self._sent = False  # the batch being delivered reached an upstream (vs. none reachable)
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="relay-forwarder")

    async def stop(self, grace_s: float) -> None:
        """Lets a batch in flight get its acks (up to ``grace_s``); unacked chunks stay on disk."""
        self._stopping = True
        if self._task is None:
            return
        if self._sending:
            await asyncio.wait([self._task], timeout=grace_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._close()

    async def _run(self) -> None:
        failures = 0
        # After a send fails, the first chunk goes alone (HEAD); if that fails too, the one behind
        # it goes alone (NEXT): its ack proves the upstream works, and blames the first.
        probe = _NORMAL
        while not self._stopping:
            if probe == _NEXT and self.buffer.ready_chunks < 2:
                probe = _HEAD  # nothing behind it to compare with: retry it
            skip = 1 if probe == _NEXT else 0
            count = self.settings.section.forward.max_inflight_chunks if probe == _NORMAL else 1
            files = await self.buffer.take(count, skip)
            self._sending, self._sent = True, False
            try:
                await self._deliver(files)
                error = None
            except asyncio.CancelledError:
                self.buffer.give_back(files, skip)
                raise
            except UpstreamError as exc:
                self.buffer.give_back(files, skip)
                error = exc
            except Exception as exc:  # a bug must not stop delivery for good: log, back off, retry
                log.exception("forwarding failed unexpectedly")
                self.buffer.give_back(files, skip)
                error = UpstreamError("internal", f"forwarding failed: {exc!r}")
            finally:
                self._sending = False
            if error is None:
                if failures:
                    log.info("upstream %s is taking chunks again", self._conn.upstream.name if self._conn else "?")
                failures = 0
                # Counted before the files go: a reader that sees the buffer empty also sees
                # them delivered (removing yields to the loop).
                self._observe_delivered(files)
                await self.buffer.remove(files)
                if probe == _NEXT:
                    await self._blame_first()
                probe = _HEAD if probe == _NEXT else _NORMAL
                continue
            if self._sent:  # the upstream took the bytes and refused them: maybe the chunks' fault
                probe = _NEXT if probe == _HEAD else _HEAD
            await self._close()
            retry = self.settings.section.forward.retry
            delay = Backoff(retry.initial_ms / 1000.0, retry.max_ms / 1000.0).delay(failures)
            failures += 1
            log.warning(
                "%s; %s chunks stay queued (%s bytes), retry %s in %.1fs",
                error,
                self.buffer.queued_chunks,
                self.buffer.used_bytes,
                failures,
                delay,
            )
            await asyncio.sleep(delay)

    async def _blame_first(self) -> None:
        """The first chunk failed alone and the one behind it got through: blamed once more. Past
        relay.forward.dead_letter_after, split in two, or, a single record, set aside."""
        first = self.buffer.peek()
        if first is None:
            return
        first.blamed += 1
        if first.blamed < self.settings.section.forward.dead_letter_after:
            return
        (taken,) = await self.buffer.take(1)
        if taken.records > 1:
            halves = await self.buffer.split(taken)
            self.metrics.split_chunks.inc()
            log.warning(
                "upstream keeps refusing chunk %s (%d records, %d bytes) while it takes others: split in two (%s)",
                taken.path.name,
                taken.records,
                taken.size,
                ", ".join(f"{h.records} records" for h in halves),
            )
            return
        target = await self.buffer.dead_letter(taken)
        self.metrics.dead_letter_chunks.inc()
        log.error(
            "upstream keeps refusing a chunk of one record (%d bytes) while it takes others: moved to %s "
            "(it stays counted in relay.buffer.max_bytes; resend it with any Forward client, or delete it)",
            taken.size,
            target,
        )

    async def _deliver(self, files: list[ChunkFile]) -> None:
        conn = self._conn
        if (
            conn is not None
            and conn.rank > 0
            and time.monotonic() - conn.opened > self.settings.section.forward.failback_s
        ):
            # On a fallback: reconnecting tries the preferred upstreams first.
            await self._close()
            conn = None
        if conn is None:
            conn = self._conn = await self._connect()
        payloads = []
        for f in list(files):
            try:
                payloads.append(await self.buffer.read(f))
            except FileNotFoundError:
                # Deleted behind the relay's back: nothing left to send, and retrying would block the queue.
                log.error("chunk file %s is gone (deleted outside the relay?): %s records lost", f.path, f.records)
                files.remove(f)
                await self.buffer.remove([f])
        started = time.monotonic()
        self._sent = True
        try:
            await asyncio.wait_for(self._send(conn, files, payloads), self.settings.section.forward.ack_timeout_s)
        except asyncio.TimeoutError:
            self._count_error(conn.upstream, "ack_timeout")
            raise UpstreamError(
                "ack_timeout",
                f"upstream {conn.upstream.name} did not ack within relay.forward.ack_timeout_s "
                f"({self.settings.section.forward.ack_timeout_s}s)",
            ) from None
        except (OSError, ssl.SSLError) as exc:
            self._count_error(conn.upstream, "closed")
            raise UpstreamError("closed", f"upstream {conn.upstream.name} connection failed: {exc}") from exc
        except ProtocolError as exc:
            self._count_error(conn.upstream, "protocol")
            raise UpstreamError("protocol", f"upstream {conn.upstream.name}: {exc}") from exc
        except UpstreamError as exc:
            self._count_error(conn.upstream, exc.kind)
            raise
        self.metrics.upstream_ack_seconds.observe(time.monotonic() - started)
        if not conn.keepalive:
            await self._close()

    async def _send(self, conn: _Connection, files: list[ChunkFile], payloads: list[bytes]) -> None:
        for payload in payloads:
            conn.writer.write(payload)
        await conn.writer.drain()
        waiting = {f.chunk_id for f in files}
        while waiting:
            chunk = parse_ack(await _next_message(conn))
            if chunk not in waiting:
                log.debug("upstream %s acked unknown chunk %s", conn.upstream.name, chunk)
            waiting.discard(chunk)

    async def _connect(self) -> _Connection:
        reasons = []
        for rank, upstream in enumerate(self.settings.upstreams):
            try:
                conn = await asyncio.wait_for(
                    self._open(upstream, rank), self.settings.section.forward.connect_timeout_s
                )
            except UpstreamError as exc:
                self._count_error(upstream, exc.kind)
                reasons.append(str(exc))
                continue
            except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
                self._count_error(upstream, "connect")
                reasons.append(f"{upstream.name}: {str(exc) or 'connect timed out'}")
                continue
            self.metrics.upstream_connected.labels(upstream.name).set(1)
            log.info("connected to upstream %s%s", upstream.name, "" if rank == 0 else " (fallback)")
            return conn
        raise UpstreamError("connect", "no upstream reachable: " + "; ".join(reasons))

    async def _open(self, upstream: Upstream, rank: int) -> _Connection:
        context = self._contexts.get(upstream.name)
        server_name = (upstream.tls.server_name or upstream.host) if upstream.tls is not None else None
        reader, writer = await asyncio.open_connection(
            upstream.host, upstream.port, ssl=context, server_hostname=server_name if context else None
        )
        conn = _Connection(upstream, rank, reader, writer)
        if upstream.shared_key:
            try:
                await self._handshake(conn, upstream.shared_key)
            except (ProtocolError, OSError, asyncio.IncompleteReadError) as exc:
                writer.close()
                raise UpstreamError("handshake", f"{upstream.name}: handshake failed: {exc}") from exc
        return conn

    async def _handshake(self, conn: _Connection, shared_key: str) -> None:
        helo = auth.parse_helo(await _next_message(conn))
        conn.keepalive = helo.keepalive
        key_salt = auth.salt()
        up = conn.upstream
        conn.writer.write(auth.ping(self.settings.hostname, shared_key, helo, key_salt, up.username, up.password))
        await conn.writer.drain()
        auth.check_pong(await _next_message(conn), shared_key, key_salt, helo.nonce)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self.metrics.upstream_connected.labels(conn.upstream.name).set(0)
        conn.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
            await asyncio.wait_for(conn.writer.wait_closed(), 1.0)

    def _count_error(self, upstream: Upstream, kind: str) -> None:
        self.metrics.upstream_errors.labels(upstream.name, kind).inc()

    def _observe_delivered(self, files: list[ChunkFile]) -> None:
        now = time.monotonic()
        self.metrics.records_out.inc(sum(f.records for f in files))
        for f in files:
            self.metrics.delivery_seconds.observe(now - f.written_at)


async def _next_message(conn: _Connection) -> object:
    """The next msgpack object from the upstream."""
    while True:
        try:
            message = next(conn.decoder)
            conn.budget.release(conn.budget.used)
            return message
        except StopIteration:
            pass
        except ProtocolError as exc:
            raise ProtocolError(f"sent a response too large to be an ack: {exc}") from exc
        except (msgpack.UnpackException, ValueError) as exc:
            raise ProtocolError(f"sent malformed msgpack: {exc}") from exc
        data = await conn.reader.read(_READ_BYTES)
        if not data:
            raise UpstreamError("closed", f"upstream {conn.upstream.name} closed the connection")
        try:
            conn.decoder.feed(data)
        except msgpack.BufferFull as exc:
            raise ProtocolError("sent a response over 1 MiB: not a Forward server?") from exc
