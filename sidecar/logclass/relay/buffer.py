"""Bounded on-disk queue of chunks waiting for the upstream's ack: what makes the relay lose nothing.

One file per upstream chunk, holding the exact PackedForward request the forwarder sends
(``{seq}-{chunk id as hex}.chunk``). A file is written under a ``.tmp`` name, fsync'd, renamed and
the directory fsync'd before any sender is acked for its records, and deleted only after the
upstream acked it; on start the files left are queued again in sequence order (they may have
reached the upstream unacked: duplicates, never losses).

Writes are group commits: requests that arrive while a write is under way go into the next one,
and requests of one tag are merged into one chunk up to ``max_chunk_bytes``, so a burst of small
requests costs a few fsyncs rather than one each.

Space is reserved before a request is queued: ``reserve`` waits while queued plus reserved bytes
would pass ``max_bytes``, which is how a full buffer turns into senders not being acked.

Held chunks (``relay.hold``: records of templates still being decided) are written the same way,
durable before their sender is acked, into ``held/`` as ``{seq}-{until}-{chunk id}.chunk``
(``until``: when the hold ends, epoch milliseconds, so a restart knows). They are not forwarded:
``on_held`` hands them to the holder, which later ``release_held``s each as an ordinary chunk with
its records' labels, durable before the held file goes.

The transport-free pieces (the waiters' ``Signal``, the fsync'd move) live in
``logclass.delivery.store``, which the OTLP front end's buffer is made of too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack

from logclass.core.private_files import fsync_folder, make_folder, open_private
from logclass.delivery.store import Signal, move_file
from logclass.errors import LogclassError
from logclass.relay import RelayError
from logclass.relay.protocol import (
    UNPACK_OPTIONS,
    DecodeLimits,
    Entry,
    ObjectBudget,
    decode_entries,
    gunzip,
    new_chunk_id,
    pack_entries,
    packed_forward,
    packer,
)

log = logging.getLogger("logclass.relay.buffer")

SUFFIX = ".chunk"
HELD = "held"
TMP_SUFFIX = ".tmp"
CORRUPT_SUFFIX = ".corrupt"
LOCK_NAME = ".lock"
# Chunks the upstreams refuse while taking others: kept, still counted in relay.buffer.max_bytes,
# for an operator to look at and resend (or delete).
DEAD_LETTER = "dead-letter"
# Bytes a request adds on disk beyond its entries and tag: option map, msgpack headers.
_OVERHEAD = 128


class BufferWriteError(LogclassError, OSError):
    """The chunk could not be made durable; its sender must not be acked."""


@dataclass(slots=True)
class ChunkFile:
    path: Path
    seq: int
    chunk_id: str  # the `chunk` option inside, which the upstream's ack must echo
    size: int
    records: int
    written_at: float  # time.monotonic() of the write (or of the recovery)
    # Times it was refused sent alone while the upstream took the chunk behind it (Forwarder).
    blamed: int = 0
    # A held chunk's end of hold (epoch seconds); None: an ordinary chunk, queued for the upstream.
    held_until: float | None = None
    tag: str = ""


@dataclass(slots=True)
class _Pending:
    tag: str
    stream: bytes
    records: int
    reserved: int
    done: asyncio.Future[None]
    held_until: float | None = None


class DiskBuffer:
    def __init__(self, path: Path, max_bytes: int, max_chunk_bytes: int, compress: bool = False) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_chunk_bytes = max_chunk_bytes
        self.compress = compress
        self._used = 0  # bytes of files on disk, queued or in flight, held included
        self._held_bytes = 0
        # Held chunks, as they are written (and, from ``open``, those a previous run left).
        self.on_held: Callable[[list[ChunkFile]], None] | None = None
        self.recovered_held: list[ChunkFile] = []
        self._reserved = 0  # bytes promised to requests not yet written
        self._ready: deque[ChunkFile] = deque()
        self._in_flight = 0
        self.dead_letter_bytes = 0
        self._pending: list[_Pending] = []
        self._next_seq = 0
        self._lock_file: IO[bytes] | None = None
        self._writing: list[_Pending] = []
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-buffer")
        # Fired whenever space is freed or chunks are queued; waiters re-check their condition.
        self._changed: Signal | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake_writer: asyncio.Event | None = None

    # -- state -----------------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    @property
    def ready_chunks(self) -> int:
        """Chunk files waiting, not in flight."""
        return len(self._ready)

    @property
    def queued_chunks(self) -> int:
        """Chunk files on disk: waiting or in flight to the upstream."""
        return len(self._ready) + self._in_flight

    def cost(self, tag: str, stream_bytes: int) -> int:
        """Bytes to reserve for a request: an upper bound of what it takes on disk."""
        return stream_bytes + len(tag.encode("utf-8", "surrogateescape")) + _OVERHEAD

    # -- life cycle ------------------------------------------------------------------------------

    def open(self) -> list[ChunkFile]:
        """Locks the directory and queues the chunks a previous run left. Blocking: call once at start."""
        try:
            # Chunks hold raw log lines: the folder and its files are this process's user's alone.
            make_folder(self.path)
            lock = (self.path / LOCK_NAME).open("ab")
        except OSError as exc:
            raise RelayError(f"cannot use relay.buffer.path {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise RelayError(
                f"relay.buffer.path {self.path} is in use by another relay process; give each relay its own directory"
            ) from exc
        self._lock_file = lock
        recovered = self._recover()
        self._ready.extend(recovered)
        self._used += sum(f.size for f in recovered)
        self.recovered_held = self._recover_held()
        self._held_bytes = sum(f.size for f in self.recovered_held)
        self._used += self._held_bytes
        self._next_seq = max((f.seq + 1 for f in recovered + self.recovered_held), default=0)
        return recovered

    def start(self) -> None:
        """Starts the writer; call from the event loop after ``open``."""
        self._changed = Signal()
        self._wake_writer = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="relay-buffer-writer")

    async def flush(self) -> None:
        """Waits until every queued request is on disk (or failed)."""
        while self._pending or self._writing:
            await asyncio.gather(*(p.done for p in self._pending + self._writing), return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        self._io.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- senders' side ---------------------------------------------------------------------------

    def try_reserve(self, nbytes: int) -> bool:
        if self._used + self._reserved + nbytes > self.max_bytes:
            return False
        self._reserved += nbytes
        return True

    async def reserve(self, nbytes: int, timeout: float | None) -> bool:
        """Waits for room for ``nbytes`` (at most ``timeout`` seconds; None: as long as it takes)."""
        if nbytes > self.max_bytes:
            raise RelayError(f"a request of {nbytes} bytes can never fit relay.buffer.max_bytes ({self.max_bytes})")
        changed = self._signal()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_reserve(nbytes):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    def release(self, nbytes: int) -> None:
        """Gives back a reservation that will not be used."""
        self._reserved -= nbytes
        self._notify()

    def append(
        self, tag: str, stream: bytes, records: int, reserved: int, held_until: float | None = None
    ) -> asyncio.Future[None]:
        """Queues a reserved request for the next write; the future is done once it is durable.
        ``held_until``: written as a held chunk (handed to ``on_held``, not forwarded)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(tag, stream, records, reserved, done, held_until))
        assert self._wake_writer is not None, "DiskBuffer.start() first"
        self._wake_writer.set()
        return done

    # -- forwarder's side ------------------------------------------------------------------------

    def peek(self) -> ChunkFile | None:
        """The chunk first in line, if any."""
        return self._ready[0] if self._ready else None

    async def take(self, max_files: int, skip: int = 0) -> list[ChunkFile]:
        """The oldest queued chunks after the first ``skip`` (at least one: waits for it), now in
        flight; the skipped ones stay first in line."""
        changed = self._signal()
        while len(self._ready) <= skip:
            await changed.wait()
        self._ready.rotate(-skip)
        files = [self._ready.popleft() for _ in range(min(max_files, len(self._ready)))]
        self._ready.rotate(skip)
        self._in_flight += len(files)
        return files

    def give_back(self, files: Sequence[ChunkFile], skip: int = 0) -> None:
        """In-flight chunks the upstream did not ack: back in line, in their order, after the
        first ``skip`` (where ``take`` found them)."""
        self._in_flight -= len(files)
        self._ready.rotate(-skip)
        self._ready.extendleft(reversed(files))
        self._ready.rotate(skip)
        self._notify()

    async def dead_letter(self, file: ChunkFile) -> Path:
        """Moves an in-flight chunk into the dead-letter folder; it stays counted in used_bytes."""
        target = self.path / DEAD_LETTER / file.path.name
        await asyncio.get_running_loop().run_in_executor(self._io, move_file, file.path, target)
        self._in_flight -= 1
        self.dead_letter_bytes += file.size
        return target

    async def split(self, file: ChunkFile) -> list[ChunkFile]:
        """Replaces an in-flight chunk of two or more records by two chunks of half as many each,
        first in line; the halves are durable before the original goes."""
        halves = await asyncio.get_running_loop().run_in_executor(self._io, self._split, file)
        self._in_flight -= 1
        self._used += sum(h.size for h in halves) - file.size
        self._ready.extendleft(reversed(halves))
        self._notify()
        return halves

    async def remove(self, files: Sequence[ChunkFile]) -> None:
        """Chunks the upstream acked: deleted (a delete lost in a crash only means a duplicate)."""
        await asyncio.get_running_loop().run_in_executor(self._io, _unlink_all, [f.path for f in files])
        self._in_flight -= len(files)
        self._used -= sum(f.size for f in files)
        self._notify()

    async def read(self, file: ChunkFile) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._io, file.path.read_bytes)

    async def read_entries(self, file: ChunkFile) -> tuple[str, list[Entry]]:
        """The tag and entries of a chunk this buffer wrote."""
        return _entries_of(await self.read(file))

    async def release_held(self, file: ChunkFile, stream: bytes, records: int) -> ChunkFile:
        """Replaces a held chunk by an ordinary one holding ``stream`` (its entries, labelled now),
        queued for the upstream; durable before the held file goes."""
        chunk = await asyncio.get_running_loop().run_in_executor(self._io, self._release_held, file, stream, records)
        self._held_bytes -= file.size
        self._used += chunk.size - file.size
        self._ready.append(chunk)
        self._notify()
        return chunk

    def _release_held(self, file: ChunkFile, stream: bytes, records: int) -> ChunkFile:
        tag, _ = _entries_of(file.path.read_bytes())
        tmp, chunk = self._write_tmp(tag, stream, records, self._take_seq(), time.monotonic())
        os.replace(tmp, chunk.path)
        fsync_folder(self.path)
        file.path.unlink()
        fsync_folder(file.path.parent)
        return chunk

    def _take_seq(self) -> int:
        """The next sequence number; the I/O thread's alone (every write runs there)."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    # -- internals -------------------------------------------------------------------------------

    def _signal(self) -> Signal:
        assert self._changed is not None, "DiskBuffer.start() first"
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.fire()

    async def _write_loop(self) -> None:
        assert self._wake_writer is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            self._writing = batch
            try:
                files = await loop.run_in_executor(self._io, self._write, batch)
            except Exception as exc:  # the writer must outlive any one write, or every sender hangs
                self._writing = []
                if isinstance(exc, OSError):
                    log.error("cannot write to relay.buffer.path %s: %s; the senders are not acked", self.path, exc)
                else:
                    log.exception("writing the relay buffer failed; the senders are not acked")
                self._reserved -= sum(p.reserved for p in batch)
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(BufferWriteError(f"cannot write the relay buffer: {exc}"))
                self._notify()
                continue
            self._writing = []
            held = [f for f in files if f.held_until is not None]
            self._ready.extend(f for f in files if f.held_until is None)
            self._used += sum(f.size for f in files)
            self._held_bytes += sum(f.size for f in held)
            self._reserved -= sum(p.reserved for p in batch)
            self._notify()
            if held and self.on_held is not None:
                self.on_held(held)
            for p in batch:
                if not p.done.done():
                    p.done.set_result(None)

    def _write(self, batch: Sequence[_Pending]) -> list[ChunkFile]:
        """Runs in the I/O thread: chunk files written, fsync'd, renamed, directory fsync'd."""
        written: list[tuple[Path, ChunkFile]] = []
        try:
            for tag, stream, records, held_until in _merge(batch, self.max_chunk_bytes):
                written.append(self._write_tmp(tag, stream, records, self._take_seq(), 0.0, held_until))
            for tmp, chunk in written:
                os.replace(tmp, chunk.path)
            fsync_folder(self.path)
            if any(chunk.held_until is not None for _, chunk in written):
                fsync_folder(self.path / HELD)
        except OSError:
            for tmp, chunk in written:
                for p in (tmp, chunk.path):
                    with contextlib.suppress(OSError):
                        p.unlink()
            raise
        now = time.monotonic()
        for _, chunk in written:
            chunk.written_at = now
        return [chunk for _, chunk in written]

    def _write_tmp(
        self, tag: str, stream: bytes, records: int, seq: int, when: float, held_until: float | None = None
    ) -> tuple[Path, ChunkFile]:
        """A chunk file written and fsync'd under its temporary name; renaming it is the caller's."""
        chunk_id = new_chunk_id()
        data = packed_forward(tag, stream, records, chunk_id, compress=self.compress)
        id_hex = base64.b64decode(chunk_id).hex()
        if held_until is None:
            final = self.path / f"{seq:016d}-{id_hex}{SUFFIX}"
        else:
            make_folder(self.path / HELD)
            final = self.path / HELD / f"{seq:016d}-{int(held_until * 1000)}-{id_hex}{SUFFIX}"
        tmp = final.with_name(final.name + TMP_SUFFIX)
        with open_private(tmp, append=False) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp, ChunkFile(final, seq, chunk_id, len(data), records, when, held_until=held_until, tag=tag)

    def _split(self, file: ChunkFile) -> list[ChunkFile]:
        """Runs in the I/O thread: two chunk files with the halves of ``file``'s entries, under its
        sequence number (so a restart finds them where it was), then ``file`` deleted."""
        tag, entries = _entries_of(file.path.read_bytes())
        middle = len(entries) // 2
        pack = packer()
        halves = [
            self._write_tmp(tag, pack_entries(part, pack), len(part), file.seq, file.written_at)
            for part in (entries[:middle], entries[middle:])
        ]
        for tmp, chunk in halves:
            os.replace(tmp, chunk.path)
        fsync_folder(self.path)
        file.path.unlink()
        fsync_folder(self.path)
        return [chunk for _, chunk in halves]

    def _recover(self) -> list[ChunkFile]:
        dead = self.path / DEAD_LETTER
        if dead.is_dir():
            self.dead_letter_bytes = sum(p.stat().st_size for p in dead.iterdir() if p.is_file())
            self._used += self.dead_letter_bytes
        for tmp in self.path.glob(f"*{TMP_SUFFIX}"):
            # A write that did not complete: nobody was acked for it.
            tmp.unlink()
        files: list[ChunkFile] = []
        now = time.monotonic()
        for path in sorted(self.path.glob(f"*{SUFFIX}")):
            try:
                files.append(_read_chunk_file(path, now))
            except (OSError, ValueError) as exc:
                aside = path.with_name(path.name + CORRUPT_SUFFIX)
                path.rename(aside)
                log.error("relay buffer file %s is unreadable (%s); moved aside to %s, not forwarded", path, exc, aside)
        return sorted(files, key=lambda f: f.seq)

    def _recover_held(self) -> list[ChunkFile]:
        folder = self.path / HELD
        if not folder.is_dir():
            return []
        for tmp in folder.glob(f"*{TMP_SUFFIX}"):
            tmp.unlink()
        files: list[ChunkFile] = []
        now = time.monotonic()
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            try:
                seq_text, until_text, id_hex = path.stem.split("-")
                file = _read_chunk_file(path.with_name(f"{seq_text}-{id_hex}{SUFFIX}"), now, data=path.read_bytes())
            except (OSError, ValueError) as exc:
                aside = path.with_name(path.name + CORRUPT_SUFFIX)
                path.rename(aside)
                log.error("held chunk %s is unreadable (%s); moved aside to %s, not forwarded", path, exc, aside)
                continue
            file.path, file.held_until = path, int(until_text) / 1000.0
            files.append(file)
        return sorted(files, key=lambda f: f.seq)


def _merge(batch: Iterable[_Pending], max_chunk_bytes: int) -> list[tuple[str, bytes, int, float | None]]:
    """(tag, entries, records, held until) per chunk to write: requests of one tag (and one end of
    hold, or none) merged up to max_chunk_bytes."""
    by_tag: dict[tuple[str, float | None], list[_Pending]] = {}
    for p in batch:
        by_tag.setdefault((p.tag, p.held_until), []).append(p)
    chunks: list[tuple[str, bytes, int, float | None]] = []
    for (tag, held_until), items in by_tag.items():
        parts: list[bytes] = []
        size = records = 0
        for p in items:
            if parts and size + len(p.stream) > max_chunk_bytes:
                chunks.append((tag, b"".join(parts), records, held_until))
                parts, size, records = [], 0, 0
            parts.append(p.stream)
            size += len(p.stream)
            records += p.records
        if parts:
            chunks.append((tag, b"".join(parts), records, held_until))
    return chunks


def _read_chunk_file(path: Path, now: float, data: bytes | None = None) -> ChunkFile:
    """``path`` named ``{seq}-{chunk id}.chunk``; ``data``: its bytes, when read already."""
    seq_text, _, id_hex = path.stem.partition("-")
    data = path.read_bytes() if data is None else data
    request: Any = msgpack.unpackb(data, **UNPACK_OPTIONS)
    if not (isinstance(request, list) and len(request) == 3 and isinstance(request[2], dict)):
        raise ValueError("not a PackedForward request")
    chunk_id = base64.b64encode(bytes.fromhex(id_hex)).decode("ascii")
    option = request[2]
    if option.get("chunk") != chunk_id or not isinstance(option.get("size"), int):
        raise ValueError("its chunk option does not match its name")
    tag = request[0] if isinstance(request[0], str) else ""
    return ChunkFile(path, int(seq_text), chunk_id, len(data), option["size"], now, tag=tag)


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Delivered already: a file that cannot be deleted is only resent after a restart.
            log.error("cannot delete delivered chunk %s (%s); it will be sent again after a restart", path, exc)


def _entries_of(data: bytes) -> tuple[str, list[Entry]]:
    """The tag and entries of a chunk file this buffer wrote (PackedForward, maybe gzip)."""
    tag, stream, option = msgpack.unpackb(data, **UNPACK_OPTIONS)
    # Its own file, which the request limits bounded when it was written; gzip inflates 1,032:1 at most.
    size = max(len(data), 1) * 1100
    limits = DecodeLimits(size, size, size)
    if option.get("compressed") == "gzip":
        stream = gunzip(stream, limits.max_bytes)
    return tag, decode_entries(stream, limits, ObjectBudget(limits.max_objects))
