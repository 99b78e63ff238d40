"""The Forward protocol server senders connect to: decode, classify, queue durably, then ack.

Per connection: an optional handshake (HELO/PING/PONG), then requests are decoded as they stream
in. Whatever complete requests one read brings are classified together, queued in the disk buffer,
and the ones carrying a ``chunk`` option are acked once their write is durable; until then nothing
more is read from that connection, so a slow pipeline or a full buffer holds the sender back
through TCP instead of piling up in memory.

A request that breaks the protocol closes its connection (the log line says why, from whom);
requests before it on that read are still queued. Other connections are not affected. Values other
than arrays are ignored, as the spec asks, and nil is a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, cast

import msgpack

from logclass.engine.lanes import caller
from logclass.relay import RelayError, auth, protocol
from logclass.relay.buffer import BufferWriteError, DiskBuffer
from logclass.relay.hold import Holder
from logclass.relay.metrics import RelayMetrics
from logclass.relay.protocol import EventBatch, ProtocolError, RequestTooLarge
from logclass.relay.settings import RelaySettings
from logclass.relay.tagger import Pending, Tagger
from logclass.relay.throttle import ThrottledLog
from logclass.relay.tls import server_context

log = logging.getLogger("logclass.relay")

_READ_BYTES = 256 * 1024
HANDSHAKE_TIMEOUT_S = 10.0


class _Close(Exception):
    """Ends a connection with one log line; ``kind`` labels protocol errors in the metrics."""

    def __init__(self, reason: str, kind: str | None) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(eq=False)
class _Connection:
    peer: str
    task: asyncio.Task[Any] | None
    busy: bool = False
    warned_non_array: bool = False
    caller: str = ""  # the lanes' owner: the sender's host

    def __post_init__(self) -> None:
        self.caller = caller("relay", self.peer)


def _refusal(exc: ProtocolError) -> _Close:
    """How a request that breaks the protocol or a decoding limit closes its connection."""
    if isinstance(exc, RequestTooLarge):
        return _Close(str(exc), "too_large")
    return _Close(f"invalid request: {exc}", "invalid")


class ForwardServer:
    def __init__(
        self,
        settings: RelaySettings,
        tagger: Tagger,
        buffer: DiskBuffer,
        metrics: RelayMetrics,
        holder: Holder | None = None,
    ) -> None:
        self.settings = settings
        self.tagger = tagger
        self.buffer = buffer
        self.metrics = metrics
        self.holder = holder
        self._context = server_context(settings.tls) if settings.tls is not None else None
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self._packer = protocol.packer()
        self._warn = ThrottledLog(log)

    async def start(self) -> None:
        host, port = self.settings.host, self.settings.port
        try:
            self._server = await asyncio.start_server(self._on_connection, host, port, ssl=self._context)
        except OSError as exc:
            raise RelayError(
                f"cannot listen on relay.listen {host}:{port}: {exc.strerror}; is another relay using it?"
            ) from exc
        if self.settings.section.udp_heartbeat:
            try:
                transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    _Heartbeat, local_addr=(host, port)
                )
                self._udp = transport
            except OSError as exc:
                log.warning("no UDP heartbeat on %s:%s (%s); TCP is unaffected", host, port, exc.strerror)

    async def stop(self, grace_s: float) -> None:
        """Stops listening; requests being processed get ``grace_s`` to be queued and acked."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
        for conn in list(self._connections):
            if not conn.busy and conn.task is not None:
                conn.task.cancel()
        tasks = [c.task for c in self._connections if c.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if len(self._connections) >= self.settings.section.max_connections:
            # Refused at once, not held: a held socket and task per connection is what a flood costs.
            self.metrics.protocol_errors.labels("connections").inc()
            self._warn.warning(
                "connections",
                "refusing a connection from %s: relay.max_connections (%d) are open",
                peer,
                self.settings.section.max_connections,
            )
            writer.close()
            return
        conn = _Connection(peer, asyncio.current_task())
        self._connections.add(conn)
        self.metrics.connections.inc()
        budget = protocol.ObjectBudget(self.settings.section.max_request_objects)
        decoder = protocol.unpacker(self.settings.limits, budget)
        try:
            if self.settings.shared_key:
                await asyncio.wait_for(self._handshake(reader, writer, decoder, budget, peer), HANDSHAKE_TIMEOUT_S)
            await self._serve(reader, writer, decoder, budget, conn)
        except _Close as exc:
            if exc.kind is not None:
                self.metrics.protocol_errors.labels(exc.kind).inc()
            log.warning("closing connection from %s: %s", peer, exc)
        except asyncio.TimeoutError:
            self.metrics.protocol_errors.labels("auth").inc()
            log.warning("closing connection from %s: no PING within %ss of HELO", peer, HANDSHAKE_TIMEOUT_S)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("connection from %s lost: %s", peer, exc)
        except asyncio.CancelledError:
            # stop() cancelled this connection's task, which ends here; re-raising would only make
            # asyncio's stream callback log the cancellation as an error.
            log.info("closing connection from %s: the relay is stopping", peer)
        except Exception:  # a bug must cost one connection (its sender resends), not the relay
            log.exception("closing connection from %s after an unexpected error", peer)
        finally:
            self._connections.discard(conn)
            self.metrics.connections.dec()
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: Any,
        budget: protocol.ObjectBudget,
        peer: str,
    ) -> None:
        assert self.settings.shared_key is not None
        nonce, auth_salt = auth.salt(), auth.salt() if self.settings.users else b""
        writer.write(auth.helo(nonce, auth_salt))
        await writer.drain()
        message = await _read_one(reader, decoder)
        budget.release(budget.used)
        try:
            ping = auth.parse_ping(message)
        except ProtocolError as exc:
            raise _Close(f"handshake: {exc}", "auth") from exc
        reason = auth.check_ping(ping, nonce, self.settings.shared_key, auth_salt, self.settings.users)
        writer.write(auth.pong(not reason, reason, self.settings.hostname, self.settings.shared_key, ping, nonce))
        await writer.drain()
        if reason:
            raise _Close(f"handshake refused: {reason} (client hostname {ping.hostname!r})", "auth")

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: Any,
        budget: protocol.ObjectBudget,
        conn: _Connection,
    ) -> None:
        idle = self.settings.section.idle_timeout_s or None
        while not self._stopping:
            try:
                data = await asyncio.wait_for(reader.read(_READ_BYTES), idle)
            except asyncio.TimeoutError:
                raise _Close(f"nothing received for relay.idle_timeout_s ({idle:g} s)", None) from None
            if not data:
                return
            started = time.monotonic()
            view = memoryview(data)
            # Fed a piece at a time, with a turn of the event loop between pieces: msgpack resumes
            # where a piece ends, so no read decodes more than a piece's worth of objects at once.
            for offset in range(0, len(data), protocol.DECODE_PIECE_BYTES):
                if offset:
                    await asyncio.sleep(0)
                self._feed(decoder, view[offset : offset + protocol.DECODE_PIECE_BYTES])
                await self._drain_decoder(decoder, budget, writer, conn, started)

    def _feed(self, decoder: Any, piece: memoryview) -> None:
        try:
            decoder.feed(piece)
        except msgpack.BufferFull:
            limit = self.settings.section.max_request_bytes
            raise _Close(
                f"a request is larger than relay.max_request_bytes ({limit} bytes); "
                "raise it or lower the sender's chunk size",
                "too_large",
            ) from None

    async def _drain_decoder(
        self,
        decoder: Any,
        budget: protocol.ObjectBudget,
        writer: asyncio.StreamWriter,
        conn: _Connection,
        started: float,
    ) -> None:
        """Accepts the complete requests in ``decoder``, their packed streams decoded stepwise.
        The requests before one that fails to decode are accepted, as they would be alone; past
        half the object budget, what is decoded is queued before the next stream decodes."""
        more = True
        while more:
            batches, settled, error, more = self._decode(decoder, budget, conn)
            ready: list[EventBatch] = []
            streamed = 0
            for batch in batches:
                if batch.stream is not None:
                    before = budget.used
                    failure = await self._decode_stream(batch, budget)
                    streamed += budget.used - before
                    if failure is not None:
                        error = failure
                        break
                ready.append(batch)
                if streamed and budget.used * 2 > budget.limit:
                    await self._accept_ready(ready, writer, conn, started)
                    budget.release(streamed)
                    ready, streamed = [], 0
            await self._accept_ready(ready, writer, conn, started)
            budget.release(settled + streamed)
            if error is not None:
                raise error

    async def _decode_stream(self, batch: EventBatch, budget: protocol.ObjectBudget) -> _Close | None:
        """Decodes ``batch``'s packed stream into its entries; the error closing the connection if any."""
        stream, batch.stream = batch.stream or b"", None
        try:
            batch.entries = await protocol.decode_entries_stepwise(stream, self.settings.limits, budget)
        except ProtocolError as exc:
            return _refusal(exc)
        return None

    async def _accept_ready(
        self, batches: list[EventBatch], writer: asyncio.StreamWriter, conn: _Connection, started: float
    ) -> None:
        if not batches:
            return
        conn.busy = True
        try:
            await self._accept(batches, writer, conn, started)
        finally:
            conn.busy = False

    def _decode(
        self, decoder: Any, budget: protocol.ObjectBudget, conn: _Connection
    ) -> tuple[list[EventBatch], int, _Close | None, bool]:
        """The complete requests buffered so far (up to half the object budget: the rest waits
        until these are queued), the objects they hold, the error that ends the connection if any,
        and whether complete requests may be left in the decoder."""
        batches: list[EventBatch] = []
        settled = 0
        limits = self.settings.limits
        try:
            for request in decoder:
                settled = budget.used
                if request is None:
                    continue  # a heartbeat
                if not isinstance(request, list):
                    if not conn.warned_non_array:
                        conn.warned_non_array = True
                        log.warning("ignoring %s from %s: requests are arrays", type(request).__name__, conn.peer)
                    continue
                batches.append(protocol.parse_request(request, limits, budget, streams=False))
                settled = budget.used
                if settled * 2 > budget.limit:
                    return batches, settled, None, True
        except ProtocolError as exc:
            return batches, settled, _refusal(exc), False
        except (msgpack.UnpackException, ValueError) as exc:
            return batches, settled, _Close(f"malformed msgpack ({type(exc).__name__}: {exc})", "malformed"), False
        return batches, settled, None, False

    async def _accept(
        self, batches: list[EventBatch], writer: asyncio.StreamWriter, conn: _Connection, started: float
    ) -> None:
        pending = await self.tagger.tag(batches, owner=conn.caller)
        acks: list[tuple[str, list[asyncio.Future[None]]]] = []
        for batch, held in zip(batches, pending, strict=True):
            self.metrics.records_in.labels(batch.mode).inc(len(batch.entries))
            writes: list[asyncio.Future[None]] = []
            for entries, held_until in self._parts(batch, held):
                stream = protocol.pack_entries(entries, self._packer)
                cost = self.buffer.cost(batch.tag, len(stream))
                await self._reserve(cost, batch, conn)
                if held_until is not None and not self._hold(batch.tag, cost, len(entries)):
                    held_until = None  # the hold is full: they leave pending, as without it
                done = self.buffer.append(batch.tag, stream, len(entries), cost, held_until)
                if held_until is not None:
                    done.add_done_callback(functools.partial(self._held_written, batch.tag, cost))
                # A failed write is logged by the buffer; this keeps asyncio from reporting it again.
                done.add_done_callback(_consume)
                writes.append(done)
            if batch.chunk is not None:
                acks.append((batch.chunk, writes))
        for chunk, writes in acks:
            for done in writes:
                try:
                    await done
                except BufferWriteError as exc:
                    raise _Close(f"{exc}; chunk {chunk} not acknowledged", None) from exc
            writer.write(protocol.ack(chunk))
        if acks:
            await writer.drain()
            self.metrics.ack_seconds.observe(time.monotonic() - started)

    def _parts(self, batch: EventBatch, pending: Pending) -> list[tuple[list[protocol.Entry], float | None]]:
        """The batch's entries to write: those forwarded at once, and those held (with when
        their hold ends): the pending ones, or with keep_order every one behind a held record."""
        entries, holder = batch.entries, self.holder
        if not entries:
            return []
        if holder is None or not holder.enabled:
            return [(entries, None)]
        if holder.holds_tag(batch.tag):
            return [(entries, holder.until(pending.sources) if pending.entries else holder.clock())]
        if not pending.entries:
            return [(entries, None)]
        held = set(pending.entries)
        ready = [entry for i, entry in enumerate(entries) if i not in held]
        waiting = [entries[i] for i in pending.entries]
        until = holder.until(pending.sources)
        return [(ready, None), (waiting, until)] if ready else [(waiting, until)]

    def _hold(self, tag: str, cost: int, records: int) -> bool:
        holder = self.holder
        assert holder is not None
        # keep_order: once a tag has a held record, its records keep their place whatever the bound.
        return holder.reserve(tag, cost, records, force=holder.holds_tag(tag))

    def _held_written(self, tag: str, cost: int, _: asyncio.Future[None]) -> None:
        assert self.holder is not None
        self.holder.written(tag, cost)

    async def _reserve(self, cost: int, batch: EventBatch, conn: _Connection) -> None:
        buffer = self.buffer
        if cost > buffer.max_bytes:
            raise _Close(
                f"a request of {cost} bytes can never fit relay.buffer.max_bytes ({buffer.max_bytes}); raise it",
                "too_large",
            )
        if buffer.try_reserve(cost):
            return
        self.metrics.backpressure.labels("waited").inc()
        self._warn.warning(
            "buffer_full",
            "relay buffer full (%s of %s bytes queued, upstream not taking them): holding a request from %s %s",
            buffer.used_bytes,
            buffer.max_bytes,
            conn.peer,
            f"unacknowledged for up to {self.settings.section.buffer.full_wait_s}s"
            if batch.chunk
            else "(no ack wanted: it waits)",
        )
        # A sender that wants an ack can resend; one that does not cannot, so it waits for room.
        timeout = self.settings.section.buffer.full_wait_s if batch.chunk is not None else None
        if not await buffer.reserve(cost, timeout):
            self.metrics.backpressure.labels("refused").inc()
            raise _Close(
                f"relay buffer still full after relay.buffer.full_wait_s ({timeout}s); "
                f"chunk {batch.chunk} not acknowledged, the sender will resend it",
                None,
            )


class _Heartbeat(asyncio.DatagramProtocol):
    """UDP heartbeat: a 0x00 byte answered with a 0x00 byte (in_forward's behaviour)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(b"\x00", addr)


async def _read_one(reader: asyncio.StreamReader, decoder: Any) -> object:
    while True:
        try:
            return next(decoder)
        except StopIteration:
            pass
        except (ProtocolError, msgpack.UnpackException, ValueError) as exc:
            raise _Close(f"malformed msgpack in the handshake ({exc})", "auth") from exc
        data = await reader.read(_READ_BYTES)
        if not data:
            raise ConnectionError("closed during the handshake")
        try:
            decoder.feed(data)
        except msgpack.BufferFull:
            raise _Close("handshake message larger than relay.max_request_bytes", "auth") from None


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
