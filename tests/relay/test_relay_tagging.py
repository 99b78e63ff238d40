"""What the relay writes into records, with the relay in this process (its own event-loop thread,
real sockets, real disk buffer) so the pipeline can be replaced: a failing, slow or full pipeline
still delivers every record, with the fallback label; key paths and output names are honoured; a
PackedForward request reaches the router as one batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from logclass import config
from logclass.core.decision import Decision, LogRecord
from logclass.engine.lanes import LaneFullError
from logclass.engine.pipeline import build_engine
from logclass.engine.runtime import Classify
from logclass.relay.app import Relay
from logclass.relay.settings import resolve
from tests.conftest import NO_LLM
from tests.engine.test_engine_lanes import GatedTier
from tests.relay.conftest import FAST_FORWARD, report
from tests.relay.forward_peer import ForwardClient, Upstream, free_port


class RelayThread:
    """A Relay on its own event loop in a thread, so blocking test clients can talk to it."""

    def __init__(self, tmp: Path, upstream: int, classify: Classify | None, relay: dict[str, Any] | None = None):
        self.port = free_port()
        section = {
            "listen": f"127.0.0.1:{self.port}",
            "upstreams": [{"host": "127.0.0.1", "port": upstream}],
            "buffer": {"path": str(tmp / "buffer")},
            "forward": FAST_FORWARD,
            **(relay or {}),
        }
        cfg = config.load(environ=NO_LLM, overrides={"relay": section})
        self.settings = resolve(cfg)
        self.cfg = cfg
        self.classify = classify
        self.loop = asyncio.new_event_loop()
        self.relay: Relay | None = None
        self.registry = CollectorRegistry()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.relay = Relay(self.settings, self.classify, self.registry)
        self.loop.run_until_complete(self.relay.start())
        self._ready.set()
        self.loop.run_forever()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> RelayThread:
        self._thread.start()
        assert self._ready.wait(30), "relay did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.relay is not None
        self.call(self.relay.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    receiver = Upstream().start()
    yield receiver
    receiver.stop()


async def _raises(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
    raise RuntimeError("a tier exploded")


async def _slow(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
    await asyncio.sleep(30)
    return []


async def _full(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
    raise LaneFullError("embedding", 50000, 50000)


@pytest.mark.parametrize(("classify", "reason"), [(_raises, "internal"), (_slow, "timeout"), (_full, "queue_full")])
def test_a_failing_pipeline_never_blocks_delivery(
    tmp_path: Path, upstream: Upstream, classify: Classify, reason: str
) -> None:
    with RelayThread(tmp_path, upstream.port, classify, {"classify_timeout_ms": 200}) as relay:
        with ForwardClient(relay.port) as client:
            chunk = [{"log": f"User User{i} logged in.", "seq": i} for i in range(20)]
            assert client.wait_ack(client.packed("app", chunk), timeout=10)
        assert upstream.wait_for_all(range(20))
    report(f"pipeline {reason}", list(range(20)), upstream.values())
    for event in upstream.events:
        assert event.record["log_label"] == "Unclassified"  # router.fallback_label; the tier tells why
        assert event.record["log_label_tier"] == "fallback"
        assert event.record["log_label_confidence"] == 0.0
        assert event.record["log_label_fallback"] == reason


def test_the_relay_uses_the_routers_fallback_label_unless_given_its_own() -> None:
    routed = {**NO_LLM, "LOGCLASS_ROUTER__FALLBACK_LABEL": "review"}
    assert resolve(config.load(environ=routed)).fallback_label == "review"
    own = {**routed, "LOGCLASS_RELAY__FALLBACK_LABEL": "relay-gave-up"}
    assert resolve(config.load(environ=own)).fallback_label == "relay-gave-up"


def test_key_paths_sources_and_output_names(tmp_path: Path, upstream: Upstream) -> None:
    seen: list[LogRecord] = []

    async def classify(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
        seen.extend(records)
        return [
            Decision(
                f"label-{r.source}", 0.87654321, "embedding", "t", "v1", "", "empty_message" if not r.message else ""
            )
            for r in records
        ]

    relay_cfg = {
        "message_key": "$.payload['text body']",
        "source_key": "$.kubernetes.labels['app.kubernetes.io/name']",
        "tag_missing_message": True,
        "output": {"label_key": "class", "tier_key": None, "confidence_key": "score", "error_key": "class_error"},
    }
    k8s = {"labels": {"app.kubernetes.io/name": "billing"}}
    sent = [
        {"seq": 0, "payload": {"text body": "User 1 logged in."}, "kubernetes": k8s},
        {"seq": 1, "payload": {"text body": b"bytes \xff message"}},  # no source: the tag
        {"seq": 2, "payload": {"other": "no message here"}},
        {"seq": 3, "payload": {"text body": ""}, "kubernetes": k8s},
        {"seq": 4, "payload": "not a map"},
    ]
    with RelayThread(tmp_path, upstream.port, classify, relay_cfg) as relay:
        with ForwardClient(relay.port) as client:
            assert client.wait_ack(client.forward("app.web", sent))
        assert upstream.wait_for_all(range(5))
    assert [(r.source, r.message) for r in seen] == [
        ("billing", "User 1 logged in."),
        ("app.web", "bytes \udcff message"),
        ("billing", ""),
    ]
    got = {e.record["seq"]: e.record for e in upstream.events}
    assert got[0]["class"] == "label-billing" and got[0]["score"] == 0.8765 and "log_label_tier" not in got[0]
    assert got[1]["payload"]["text body"] == b"bytes \xff message"  # bytes forwarded unchanged
    assert got[3]["class_error"] == "empty_message" and "class_error" not in got[0]
    for missing in (2, 4):
        assert got[missing]["class"] == "Unclassified" and got[missing]["log_label_fallback"] == "missing_message"


def test_records_without_message_pass_untouched_by_default(tmp_path: Path, upstream: Upstream) -> None:
    async def classify(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
        return [Decision("L", 1.0, "regex", "t", "v") for _ in records]

    with RelayThread(tmp_path, upstream.port, classify) as relay:
        with ForwardClient(relay.port) as client:
            assert client.wait_ack(client.forward("app", [{"seq": 0, "msg": "x"}, {"seq": 1, "log": "y"}]))
        assert upstream.wait_for_all([0, 1])
    got = {e.record["seq"]: e.record for e in upstream.events}
    assert got[0] == {"seq": 0, "msg": "x"}
    assert got[1] == {"seq": 1, "log": "y", "log_label": "L", "log_label_tier": "regex", "log_label_confidence": 1.0}


def test_classify_false_forwards_records_untouched(tmp_path: Path, upstream: Upstream) -> None:
    async def never(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
        raise AssertionError("classify: false must not call the pipeline")

    with RelayThread(tmp_path, upstream.port, never, {"classify": False}) as relay:
        with ForwardClient(relay.port) as client:
            assert client.wait_ack(client.packed("app", [{"log": "User 1 logged in.", "seq": 0}]))
        assert upstream.wait_for_all([0])
    assert upstream.events[0].record == {"log": "User 1 logged in.", "seq": 0}


def test_a_packed_forward_request_is_one_engine_call(tmp_path: Path, upstream: Upstream) -> None:
    cfg = config.load(environ=NO_LLM, overrides={"router": {"tiers": ["regex"], "source_routes": {}}})
    engine = build_engine(cfg)
    calls: list[int] = []

    async def classify(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
        calls.append(len(records))
        return await engine.classify(records, budget_s)

    lines = ["User User{} logged in.", "Backup completed successfully.", "Disk cleanup completed successfully."]
    chunk = [{"log": lines[i % 3].format(i), "seq": i} for i in range(1000)]
    with RelayThread(tmp_path, upstream.port, classify) as relay:
        with ForwardClient(relay.port) as client:
            assert client.wait_ack(client.packed("app", chunk), timeout=20)
            assert client.wait_ack(client.packed("app", chunk[:10]), timeout=20)  # exact-cache hits now
        assert upstream.wait_for(lambda u: len(u.events) == 1010)
    assert calls == [1000, 10] and engine.stats.records == 1010
    assert engine.stats.exact_hits >= 10
    labels = {e.record["log_label"] for e in upstream.events}
    assert labels == {"User Action", "System Notification"}


def test_known_records_are_not_held_by_a_cold_burst(tmp_path: Path, upstream: Upstream) -> None:
    """New templates wait in the embedding lane (held there by the test) while known records of a
    later request are tagged and delivered; the cold ones are forwarded as pending after the
    relay's budget, and their templates are decided once the lane moves."""
    cfg = config.load(environ=NO_LLM, overrides={"router": {"source_routes": {}}})
    holder: dict[str, Any] = {}

    async def classify(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
        if "engine" not in holder:  # built on the relay's loop: the fake's gate belongs to it
            holder["tier"] = GatedTier()
            holder["engine"] = build_engine(cfg, tiers={"embedding": holder["tier"]})
        decisions: list[Decision] = await holder["engine"].classify(records, budget_s, owner)
        return decisions

    known = [{"log": f"User User{i} logged in.", "seq": i} for i in range(50)]
    cold = [
        {"log": f"novel subsystem {word} reported state change", "seq": 100 + i} for i, word in enumerate("abcdefgh")
    ]
    # The hold off: its records leave pending (tests/relay/test_relay_hold.py holds them).
    with RelayThread(tmp_path, upstream.port, classify, {"budget_ms": 20, "hold": {"max_s": 0}}) as relay:
        with ForwardClient(relay.port) as burst, ForwardClient(relay.port) as warm:
            assert burst.wait_ack(burst.packed("app", cold), timeout=20)
            assert warm.wait_ack(warm.packed("app", known), timeout=20)
            assert upstream.wait_for(lambda u: len(u.events) == 58)
            tier: GatedTier = holder["tier"]
            assert len(tier.calls) == 1  # the cold batch is still held at the gate
            relay.loop.call_soon_threadsafe(tier.open)
            relay.call(holder["engine"].drain())
            assert burst.wait_ack(burst.packed("app", cold[:1]), timeout=20)
        assert upstream.wait_for(lambda u: len(u.events) == 59)
        relay.call(holder["engine"].close())
    by_seq = {e.record["seq"]: e for e in upstream.events[:58]}
    assert {by_seq[i].record["log_label_tier"] for i in range(50)} == {"regex"}
    assert {by_seq[100 + i].record["log_label_tier"] for i in range(8)} == {"pending"}
    assert upstream.events[-1].record["log_label"] == "Gated"  # decided in the background, then cached
