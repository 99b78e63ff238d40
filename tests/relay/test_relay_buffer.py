"""The on-disk buffer: durable before acked, deleted only when delivered, recovered in order,
bounded, one relay per directory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest

from logclass.relay import RelayError, protocol
from logclass.relay.buffer import DiskBuffer

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def stream(*seqs: int) -> bytes:
    return protocol.pack_entries([[1, {"seq": s}] for s in seqs], protocol.packer())


def decode(data: bytes) -> tuple[str, list[Any], dict[str, Any]]:
    tag, entries, option = msgpack.unpackb(data, raw=False)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(entries)
    return tag, [e[1]["seq"] for e in unpacker], option


async def put(buffer: DiskBuffer, tag: str, data: bytes, records: int) -> asyncio.Future[None]:
    cost = buffer.cost(tag, len(data))
    assert await buffer.reserve(cost, timeout=1)
    return buffer.append(tag, data, records, cost)


def test_chunks_are_durable_when_acked_and_recovered_in_order(tmp_path: Path) -> None:
    async def first_run() -> list[str]:
        buffer = DiskBuffer(tmp_path, max_bytes=1 << 20, max_chunk_bytes=1 << 20)
        assert buffer.open() == []
        buffer.start()
        for i in range(3):
            await (await put(buffer, f"tag{i}", stream(i), 1))
            # Acked only once the file is on disk under its final name.
            assert len(list(tmp_path.glob("*.chunk"))) == i + 1
        taken = await buffer.take(1)
        payload = await buffer.read(taken[0])
        await buffer.remove(taken)  # delivered: gone
        await buffer.close()
        return [decode(payload)[0]]

    assert run(first_run()) == ["tag0"]
    (tmp_path / "0000000000000099-00.chunk.tmp").write_bytes(b"half a write")

    async def second_run() -> list[tuple[str, list[Any], dict[str, Any]]]:
        buffer = DiskBuffer(tmp_path, max_bytes=1 << 20, max_chunk_bytes=1 << 20)
        recovered = buffer.open()
        assert [f.records for f in recovered] == [1, 1] and buffer.used_bytes == sum(f.size for f in recovered)
        buffer.start()
        files = await buffer.take(10)
        out = [decode(await buffer.read(f)) for f in files]
        assert [o[2]["chunk"] for o in out] == [f.chunk_id for f in files]
        await (await put(buffer, "later", stream(9), 1))
        later = await buffer.take(10)
        assert later[0].seq > files[-1].seq  # sequence numbers carry on after a restart
        await buffer.close()
        return out

    assert [(tag, seqs) for tag, seqs, _ in run(second_run())] == [("tag1", [1]), ("tag2", [2])]
    assert not list(tmp_path.glob("*.tmp")), "an unfinished write is discarded on start"


def test_requests_queued_together_merge_per_tag_up_to_the_chunk_size(tmp_path: Path) -> None:
    async def main() -> list[tuple[str, list[Any]]]:
        buffer = DiskBuffer(tmp_path, max_bytes=1 << 20, max_chunk_bytes=len(stream(0, 1)) + 1)
        buffer.open()
        buffer.start()
        done = [await put(buffer, tag, stream(i), 1) for i, tag in enumerate(["a", "b", "a", "a", "b"])]
        await asyncio.gather(*done)
        files = await buffer.take(100)
        out = [decode(await buffer.read(f))[:2] for f in files]
        assert [f.records for f in files] == [len(seqs) for _, seqs in out]
        await buffer.close()
        return out

    assert run(main()) == [("a", [0, 2]), ("a", [3]), ("b", [1, 4])]


def test_a_full_buffer_makes_reservations_wait_until_chunks_are_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        data = stream(*range(200))
        buffer = DiskBuffer(tmp_path, max_bytes=3 * len(data), max_chunk_bytes=len(data))
        buffer.open()
        buffer.start()
        await (await put(buffer, "t", data, 200))
        await (await put(buffer, "t", data, 200))
        cost = buffer.cost("t", len(data))
        assert not await buffer.reserve(cost, timeout=0.2), "past max_bytes a reservation must wait"
        waiting = asyncio.ensure_future(buffer.reserve(cost, timeout=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await buffer.remove(await buffer.take(1))  # an upstream ack frees room
        assert await waiting
        with pytest.raises(RelayError, match="can never fit"):
            await buffer.reserve(buffer.max_bytes + 1, timeout=1)
        buffer.release(cost)
        await buffer.close()

    run(main())


def test_given_back_chunks_go_first_again(tmp_path: Path) -> None:
    async def main() -> None:
        buffer = DiskBuffer(tmp_path, max_bytes=1 << 20, max_chunk_bytes=1)
        buffer.open()
        buffer.start()
        for i in range(3):
            await (await put(buffer, "t", stream(i), 1))
        first = await buffer.take(2)
        buffer.give_back(first)
        again = await buffer.take(3)
        assert [f.seq for f in again] == [0, 1, 2] and buffer.queued_chunks == 3
        await buffer.close()

    run(main())


def test_one_relay_per_directory_and_unreadable_files_are_set_aside(tmp_path: Path) -> None:
    first = DiskBuffer(tmp_path, max_bytes=1 << 20, max_chunk_bytes=1 << 20)
    first.open()
    with pytest.raises(RelayError, match="in use by another relay process"):
        DiskBuffer(tmp_path, max_bytes=1 << 20, max_chunk_bytes=1 << 20).open()
    run(first.close())
    (tmp_path / "0000000000000000-00ff.chunk").write_bytes(b"\x93\xa1tnot a chunk")
    again = DiskBuffer(tmp_path, max_bytes=1 << 20, max_chunk_bytes=1 << 20)
    assert again.open() == []
    assert (tmp_path / "0000000000000000-00ff.chunk.corrupt").exists()
    run(again.close())


def test_chunks_and_their_folder_are_private(tmp_path: Path) -> None:
    """Chunks are raw log lines: neither the folder nor a chunk is readable by other users."""
    folder = tmp_path / "buffer"

    async def scenario() -> None:
        buffer = DiskBuffer(folder, max_bytes=1 << 20, max_chunk_bytes=1 << 20)
        buffer.open()
        buffer.start()
        await (await put(buffer, "tag", stream(1), 1))
        await buffer.close()

    run(scenario())
    (chunk,) = folder.glob("*.chunk")
    assert chunk.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
