"""The relay's hold (issue 31), with the relay in this process on real sockets and a real disk
buffer, and an embedding tier the test gates: records of new templates are acked at once but wait
in the buffer until their label lands, while known records go on; a hold that ends releases them
pending; keep_order holds what follows them; the hold's bound lets them leave pending instead of
filling the buffer. (tests/relay/test_relay_hold_process.py kills a real relay while it holds.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from logclass import config
from logclass.core.decision import Decision, LogRecord
from logclass.engine.engine import Engine
from logclass.engine.pipeline import build_engine
from logclass.relay.buffer import HELD, DiskBuffer
from tests.conftest import NO_LLM
from tests.engine.test_engine_lanes import GatedTier
from tests.relay.forward_peer import ForwardClient, Upstream
from tests.relay.test_relay_tagging import RelayThread

KNOWN = [{"log": f"User User{i} logged in.", "seq": i} for i in range(20)]
COLD = [{"log": f"novel subsystem {word} reported state change", "seq": 100 + i} for i, word in enumerate("abcdef")]


class Gated:
    """The relay's pipeline: a real engine whose embedding tier waits for the test to open it."""

    def __init__(self) -> None:
        self.cfg = config.load(environ=NO_LLM, overrides={"router": {"source_routes": {}}})
        self.tier: GatedTier | None = None
        self.engine: Engine | None = None

    async def __call__(
        self, records: Sequence[LogRecord], budget_s: float | None, owner: object = None
    ) -> list[Decision]:
        if self.engine is None:  # built on the relay's loop: the gate belongs to it
            self.tier = GatedTier()
            self.engine = build_engine(self.cfg, tiers={"embedding": self.tier})
        return await self.engine.classify(records, budget_s, owner)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    receiver = Upstream().start()
    yield receiver
    receiver.stop()


def _held_files(tmp: Path) -> list[Path]:
    return sorted((tmp / "buffer" / HELD).glob("*.chunk"))


def _sample(relay: RelayThread, name: str, **labels: str) -> float:
    return relay.registry.get_sample_value(name, labels) or 0.0


def _open_and_close(relay: RelayThread, pipeline: Gated) -> None:
    assert pipeline.tier is not None and pipeline.engine is not None
    relay.loop.call_soon_threadsafe(pipeline.tier.open)


def test_held_records_arrive_later_with_their_label(tmp_path: Path, upstream: Upstream) -> None:
    pipeline = Gated()
    with RelayThread(tmp_path, upstream.port, pipeline, {"budget_ms": 20, "hold": {"max_s": 60}}) as relay:
        with ForwardClient(relay.port) as burst, ForwardClient(relay.port) as warm:
            # Acked at once, though the label is not known yet: the sender is never held back.
            assert burst.wait_ack(burst.packed("app", COLD + KNOWN[:2]), timeout=20)
            assert warm.wait_ack(warm.packed("app", KNOWN[2:]), timeout=20)
            assert upstream.wait_for(lambda u: len(u.events) == len(KNOWN))
            assert len(_held_files(tmp_path)) == 1
            assert _sample(relay, "logclass_relay_held_records") == len(COLD)
            _open_and_close(relay, pipeline)
            assert upstream.wait_for(lambda u: len(u.events) == len(KNOWN) + len(COLD))
        relay.call(pipeline.engine.close())  # type: ignore[union-attr]
        assert _sample(relay, "logclass_relay_hold_records_total", outcome="labelled") == len(COLD)
        assert _sample(relay, "logclass_relay_held_records") == 0
    first, later = upstream.events[: len(KNOWN)], upstream.events[len(KNOWN) :]
    assert {e.record["seq"] for e in first} == {r["seq"] for r in KNOWN}  # the known ones never waited
    assert {e.record["seq"] for e in later} == {r["seq"] for r in COLD}
    assert {(e.record["log_label"], e.record["log_label_tier"]) for e in later} == {("Gated", "embedding")}
    assert _held_files(tmp_path) == []


def test_a_hold_that_ends_releases_its_records_pending(tmp_path: Path, upstream: Upstream) -> None:
    pipeline = Gated()  # never opened
    with RelayThread(tmp_path, upstream.port, pipeline, {"budget_ms": 20, "hold": {"max_s": 0.3}}) as relay:
        with ForwardClient(relay.port) as client:
            assert client.wait_ack(client.packed("app", COLD), timeout=20)
            assert upstream.wait_for(lambda u: len(u.events) == len(COLD))
        assert _sample(relay, "logclass_relay_hold_records_total", outcome="pending") == len(COLD)
        _open_and_close(relay, pipeline)
        relay.call(pipeline.engine.close())  # type: ignore[union-attr]
    assert {e.record["log_label_tier"] for e in upstream.events} == {"pending"}
    assert {e.record["log_label"] for e in upstream.events} == {"Unclassified"}


def test_keep_order_holds_the_records_behind_a_held_one(tmp_path: Path, upstream: Upstream) -> None:
    pipeline = Gated()
    settings: dict[str, Any] = {"budget_ms": 20, "hold": {"max_s": 60, "keep_order": True}}
    with RelayThread(tmp_path, upstream.port, pipeline, settings) as relay:
        with ForwardClient(relay.port) as client:
            assert client.wait_ack(client.packed("app", COLD), timeout=20)
            assert client.wait_ack(client.packed("app", KNOWN), timeout=20)  # acked, and held behind
            assert client.wait_ack(client.packed("other", KNOWN[:1]), timeout=20)  # another tag goes on
            assert upstream.wait_for(lambda u: len(u.events) == 1)
            assert len(_held_files(tmp_path)) == 2
            _open_and_close(relay, pipeline)
            assert upstream.wait_for(lambda u: len(u.events) == 1 + len(COLD) + len(KNOWN))
        relay.call(pipeline.engine.close())  # type: ignore[union-attr]
    app = [e.record["seq"] for e in upstream.events if e.tag == "app"]
    assert app == [r["seq"] for r in COLD + KNOWN]  # in the order they were sent


def test_a_full_hold_lets_records_leave_pending_rather_than_fill_the_buffer(tmp_path: Path, upstream: Upstream) -> None:
    pipeline = Gated()
    big = [{"log": f"novel subsystem {word} reported " + "x" * 30_000, "seq": i} for i, word in enumerate("abcd")]
    settings: dict[str, Any] = {"budget_ms": 20, "hold": {"max_s": 60, "max_bytes": 65536}}
    with RelayThread(tmp_path, upstream.port, pipeline, settings) as relay:
        with ForwardClient(relay.port) as client:
            for record in big:
                assert client.wait_ack(client.packed("app", [record]), timeout=20)
            # Two fit in 64 KiB; the others leave at once, pending.
            assert upstream.wait_for(lambda u: len(u.events) == 2)
            assert _sample(relay, "logclass_relay_hold_records_total", outcome="hold_full") == 2
            _open_and_close(relay, pipeline)
            assert upstream.wait_for(lambda u: len(u.events) == 4)
        relay.call(pipeline.engine.close())  # type: ignore[union-attr]
    tiers = [e.record["log_label_tier"] for e in upstream.events]
    assert tiers == ["pending", "pending", "embedding", "embedding"]


def test_held_chunks_are_found_again_after_a_restart(tmp_path: Path) -> None:
    """The buffer's side: a held chunk outlives its process, keeps when its hold ends, and one
    that is not a chunk is set aside, not forwarded."""

    async def write_held() -> float:
        buffer = DiskBuffer(tmp_path, 1 << 20, 1 << 20)
        buffer.open()
        buffer.start()
        got: list[Any] = []
        buffer.on_held = got.extend
        until = 2_000_000_000.5
        await buffer.append("app", b"\x92\xce\x00\x00\x00\x01\x81\xa3log\xa1x", 1, 64, held_until=until)
        assert len(got) == 1 and got[0].held_until == until and buffer.ready_chunks == 0
        assert buffer.held_bytes == got[0].size
        await buffer.close()
        return until

    until = asyncio.run(write_held())
    (tmp_path / HELD / "0000000000000009-1-00ff.chunk").write_bytes(b"not msgpack")

    async def reopen() -> None:
        buffer = DiskBuffer(tmp_path, 1 << 20, 1 << 20)
        buffer.open()
        buffer.start()
        (held,) = buffer.recovered_held
        assert held.held_until == until and held.tag == "app" and held.records == 1
        assert buffer.ready_chunks == 0 and buffer.held_bytes == held.size
        tag, entries = await buffer.read_entries(held)
        chunk = await buffer.release_held(held, b"\x92\xce\x00\x00\x00\x01\x81\xa3log\xa1y", 1)
        assert tag == "app" and len(entries) == 1
        assert buffer.ready_chunks == 1 and buffer.held_bytes == 0 and chunk.seq > held.seq
        await buffer.close()

    asyncio.run(reopen())
    assert [p.name for p in (tmp_path / HELD).iterdir()] == ["0000000000000009-1-00ff.chunk.corrupt"]
