"""A bounded on-disk store of opaque chunks, oldest first: what lets a front end answer its sender
success before the upstream has the records, and lose nothing when it or the upstream restarts.

One file per chunk, ``{seq}.chunk``: a header (magic, payload length, CRC-32, records) and the
payload bytes. A chunk is written under a ``.tmp`` name, fsync'd, renamed and the folder fsync'd
before ``put`` returns, and deleted only when ``ack``'d; on ``open`` the files a previous run left
are queued again in sequence order (at least once: a chunk sent but not acked is sent again).
A file that is truncated or corrupt is moved to ``dead-letter/`` with a ``.reason`` file and an
error log, never retried. Dead letters stay counted in ``max_bytes`` until an operator resends or
deletes them: nothing is dropped silently.

``Signal`` and ``move_file`` are shared with the relay's Forward buffer (relay/buffer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from logclass.core.private_files import fsync_folder, make_folder, open_private
from logclass.errors import LogclassError

log = logging.getLogger("logclass.delivery")

SUFFIX = ".chunk"
TMP_SUFFIX = ".tmp"
REASON_SUFFIX = ".reason"
LOCK_NAME = ".lock"
DEAD_LETTER = "dead-letter"
MAGIC = b"LCCHUNK1"
# magic, payload length, CRC-32 of the payload, records.
_HEADER = struct.Struct(">8sQII")
HEADER_BYTES = _HEADER.size


class StoreError(LogclassError):
    """The store's folder cannot be used (unreadable, or locked by another process)."""


class StoreWriteError(LogclassError, OSError):
    """A chunk could not be made durable; its sender must not be answered success."""


class CorruptChunk(LogclassError, ValueError):
    """A chunk file that is not what ``put`` wrote (truncated, altered, or not a chunk at all)."""


@dataclass(slots=True)
class StoredChunk:
    path: Path
    seq: int
    size: int  # bytes on disk, header included
    records: int


class ChunkStore:
    """``open`` (blocking, once), then from the event loop: ``put``, ``take`` / ``ack`` /
    ``give_back`` / ``dead_letter``, ``close``. ``setting``: the settings key named in errors."""

    def __init__(self, path: Path, max_bytes: int, setting: str = "buffer.path") -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.setting = setting
        self.dead_letter_bytes = 0
        self._used = 0  # files on disk: queued, in flight and dead letters
        self._reserved = 0  # bytes promised to puts not yet on disk
        self._ready: deque[StoredChunk] = deque()
        self._in_flight = 0
        self._next_seq = 0
        self._lock_file: IO[bytes] | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-store")
        self._changed: Signal | None = None

    # -- state -------------------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def queued_chunks(self) -> int:
        """Chunks on disk waiting or in flight (not the dead letters)."""
        return len(self._ready) + self._in_flight

    @staticmethod
    def cost(payload_bytes: int) -> int:
        return payload_bytes + HEADER_BYTES

    # -- life cycle --------------------------------------------------------------------------------

    def open(self) -> list[StoredChunk]:
        """Locks the folder and queues the chunks a previous run left; returns them."""
        try:
            make_folder(self.path)
            lock = (self.path / LOCK_NAME).open("ab")
        except OSError as exc:
            raise StoreError(f"cannot use {self.setting} {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise StoreError(
                f"{self.setting} {self.path} is in use by another process; give each process its own folder"
            ) from exc
        self._lock_file = lock
        recovered = self._recover()
        self._ready.extend(recovered)
        self._used += sum(c.size for c in recovered)
        self._next_seq = max((c.seq + 1 for c in recovered), default=self._next_seq)
        return recovered

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._io, lambda: None)
        self._io.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- writers' side -----------------------------------------------------------------------------

    async def put(self, payload: bytes, records: int) -> StoredChunk | None:
        """Writes ``payload`` as the newest chunk and returns it once durable; None, writing
        nothing, when it would take the store past ``max_bytes``."""
        size = self.cost(len(payload))
        if self._used + self._reserved + size > self.max_bytes:
            return None
        self._reserved += size
        seq = self._next_seq
        self._next_seq += 1
        try:
            chunk = await asyncio.get_running_loop().run_in_executor(self._io, self._write, seq, payload, records)
        except OSError as exc:
            log.error("cannot write to %s %s: %s; the sender is not answered success", self.setting, self.path, exc)
            raise StoreWriteError(f"cannot write the buffer: {exc}") from exc
        finally:
            self._reserved -= size
        self._used += chunk.size
        self._insert(chunk)
        self._notify()
        return chunk

    # -- deliverer's side --------------------------------------------------------------------------

    async def take(self) -> StoredChunk:
        """The oldest queued chunk, now in flight (waits for one)."""
        changed = self._signal()
        while not self._ready:
            await changed.wait()
        self._in_flight += 1
        return self._ready.popleft()

    def give_back(self, chunk: StoredChunk) -> None:
        """An in-flight chunk not delivered: first in line again."""
        self._in_flight -= 1
        self._ready.appendleft(chunk)
        self._notify()

    async def read(self, chunk: StoredChunk) -> bytes:
        """The payload of a chunk; CorruptChunk when the file is not what ``put`` wrote."""
        data = await asyncio.get_running_loop().run_in_executor(self._io, chunk.path.read_bytes)
        return _payload(data)[0]

    async def ack(self, chunk: StoredChunk) -> None:
        """An in-flight chunk delivered: deleted (a delete lost in a crash only means a duplicate)."""
        await asyncio.get_running_loop().run_in_executor(self._io, _unlink, chunk.path)
        self._in_flight -= 1
        self._used -= chunk.size
        self._notify()

    async def dead_letter(self, chunk: StoredChunk, reason: str) -> Path:
        """Moves an in-flight chunk to ``dead-letter/``, with ``reason`` beside it; it stays
        counted in ``max_bytes``."""
        target = await asyncio.get_running_loop().run_in_executor(self._io, self._dead_letter, chunk.path, reason)
        self._in_flight -= 1
        self.dead_letter_bytes += chunk.size
        self._notify()
        return target

    # -- internals ---------------------------------------------------------------------------------

    def _signal(self) -> Signal:
        if self._changed is None:
            self._changed = Signal()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.fire()

    def _insert(self, chunk: StoredChunk) -> None:
        """Queued in sequence order (concurrent puts may finish out of order)."""
        if not self._ready or self._ready[-1].seq < chunk.seq:
            self._ready.append(chunk)
            return
        items = sorted([*self._ready, chunk], key=lambda c: c.seq)
        self._ready.clear()
        self._ready.extend(items)

    def _write(self, seq: int, payload: bytes, records: int) -> StoredChunk:
        """Runs in the I/O thread: written, fsync'd, renamed, folder fsync'd."""
        final = self.path / f"{seq:016d}{SUFFIX}"
        tmp = final.with_name(final.name + TMP_SUFFIX)
        header = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), records)
        try:
            with open_private(tmp, append=False) as fh:
                fh.write(header)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            fsync_folder(self.path)
        except OSError:
            for p in (tmp, final):
                with contextlib.suppress(OSError):
                    p.unlink()
            raise
        return StoredChunk(final, seq, len(header) + len(payload), records)

    def _dead_letter(self, source: Path, reason: str) -> Path:
        target = self.path / DEAD_LETTER / source.name
        n = 0
        while target.exists():  # a dead letter is never overwritten
            n += 1
            target = self.path / DEAD_LETTER / f"{source.stem}.{n}{SUFFIX}"
        make_folder(target.parent)
        with open_private(target.with_name(target.name + REASON_SUFFIX), append=False) as fh:
            fh.write(reason.encode("utf-8", "replace") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        move_file(source, target)
        return target

    def _recover(self) -> list[StoredChunk]:
        dead = self.path / DEAD_LETTER
        if dead.is_dir():
            letters = [p for p in dead.glob(f"*{SUFFIX}") if p.is_file()]
            self.dead_letter_bytes = sum(p.stat().st_size for p in letters)
            self._used += self.dead_letter_bytes
            # New chunks are numbered past the dead letters too: no name is ever used twice.
            self._next_seq = max((int(p.stem) + 1 for p in letters if p.stem.isdigit()), default=0)
        for tmp in self.path.glob(f"*{TMP_SUFFIX}"):
            tmp.unlink()  # a write that did not complete: nobody was answered success for it
        chunks: list[StoredChunk] = []
        for path in sorted(self.path.glob(f"*{SUFFIX}")):
            try:
                seq = int(path.stem)
                data = path.read_bytes()
                _, records = _payload(data)
            except (OSError, ValueError) as exc:
                reason = f"unreadable chunk file: {exc}"
                target = self._dead_letter(path, reason)
                self.dead_letter_bytes += target.stat().st_size
                self._used += target.stat().st_size
                log.error("%s: %s is unreadable (%s); moved to %s, not delivered", self.setting, path, exc, target)
                continue
            chunks.append(StoredChunk(path, seq, len(data), records))
        return sorted(chunks, key=lambda c: c.seq)


def _payload(data: bytes) -> tuple[bytes, int]:
    """The payload and records of a chunk file's bytes."""
    if len(data) < HEADER_BYTES:
        raise CorruptChunk(f"{len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, length, crc, records = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptChunk("not a chunk file (bad magic)")
    payload = data[HEADER_BYTES:]
    if len(payload) != length:
        raise CorruptChunk(f"truncated: {len(payload)} of {length} payload bytes")
    if zlib.crc32(payload) != crc:
        raise CorruptChunk("payload checksum mismatch")
    return payload, records


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot delete delivered chunk %s (%s); it will be sent again after a restart", path, exc)


class Signal:
    """Wakes every current waiter at once (asyncio.Condition without the lock, which no state here needs:
    it is all touched from the event loop)."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wait(self) -> asyncio.Future[None]:
        """Done at the next fire(). Not a coroutine: the future is taken now, so a fire() between
        the caller's check and its first await (wait_for starts a task a loop turn later) is not missed."""
        return asyncio.shield(self._future)

    def fire(self) -> None:
        if not self._future.done():
            self._future.set_result(None)
        self._future = asyncio.get_running_loop().create_future()


def move_file(source: Path, target: Path) -> None:
    """``source`` renamed to ``target`` (its folder made first), both folders fsync'd."""
    make_folder(target.parent)
    os.replace(source, target)
    fsync_folder(target.parent)
    fsync_folder(source.parent)
