"""The shared store's contract, on the in-process store and on a real redis-server, and what a
node does when the store is down, slow or refusing: it answers as if the store held nothing, in
bounded time, and stops asking while the circuit is open."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logclass import config
from logclass.config.settings import StoreSettings
from logclass.store.base import Claim, Keys, SharedStore
from logclass.store.local import LocalStore
from logclass.store.open import open_store
from logclass.store.redis import RedisStore, StoreConfigError
from tests.store.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(url: str | None, **changes: object) -> StoreSettings:
    store = config.load(environ={}).store
    return dataclasses.replace(store, url=url, **changes)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], SharedStore]]:
    """A factory of stores that see the same data (two nodes of one deployment)."""
    if request.param == "local":
        shared = LocalStore()
        yield lambda: shared
        return
    server = RedisServer(tmp_path)
    server.start()
    try:
        # Each test closes its stores on its own event loop.
        yield lambda: RedisStore(_settings(server.url, timeout_ms=2000))
    finally:
        server.stop()


KEYS = Keys("test")


def test_values_round_trip_for_a_whole_batch_in_one_call(store: Callable[[], SharedStore]) -> None:
    async def scenario() -> None:
        s = store()
        a, b = KEYS.decision("v1", "", "User <*> logged in."), KEYS.decision("v1", "", "Disk <*> full")
        await s.put(a, b'{"label": "User Action"}', 60)
        calls = s.stats.calls
        assert await s.get_many([a, b, a]) == [b'{"label": "User Action"}', None, b'{"label": "User Action"}']
        assert s.stats.calls == calls + 1 and s.stats.hits == 2 and s.stats.misses == 1
        assert await s.get_many([]) == []
        await s.close()

    asyncio.run(scenario())


def test_one_node_wins_a_claim_and_the_others_see_it_held(store: Callable[[], SharedStore]) -> None:
    async def scenario() -> None:
        node_a, node_b = store(), store()
        key = KEYS.claim("v1", "", "new template")
        assert await node_a.claim(key, "a", 10_000) is Claim.WON
        assert await node_b.claim(key, "b", 10_000) is Claim.HELD
        assert await node_a.claim(key, "a", 10_000) is Claim.WON  # its own claim, renewed
        await node_b.release(key, "b")  # not b's: left alone
        assert await node_b.claim(key, "b", 10_000) is Claim.HELD
        await node_a.release(key, "a")
        assert await node_b.claim(key, "b", 10_000) is Claim.WON
        for node in (node_a, node_b):
            await node.close()

    asyncio.run(scenario())


def test_keys_differ_by_bundle_route_and_template_and_stay_short() -> None:
    huge = "x" * (64 << 10)
    assert len(KEYS.decision("v1", "", huge)) < 100
    assert len({KEYS.decision("v1", "", "t"), KEYS.decision("v2", "", "t"), KEYS.decision("v1", "llm", "t")}) == 3
    # Parts are length-prefixed: moving text between them changes the key.
    assert KEYS.decision("v1", "ab", "c") != KEYS.decision("v1", "a", "bc")
    assert KEYS.decision("v1", "", "t") != KEYS.claim("v1", "", "t")


def test_a_lease_runs_out_and_another_node_takes_the_claim() -> None:
    clock = Clock()
    shared = LocalStore(clock=clock)

    async def scenario() -> None:
        assert await shared.claim("k", "a", 500) is Claim.WON
        clock.now += 0.499
        assert await shared.claim("k", "b", 500) is Claim.HELD
        clock.now += 0.002  # a's node died: nobody renewed its lease
        assert await shared.claim("k", "b", 500) is Claim.WON

    asyncio.run(scenario())


def test_a_redis_claim_carries_its_lease(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        import redis.asyncio as aioredis

        s = RedisStore(_settings(redis_server.url, timeout_ms=2000))
        assert await s.claim("test:claim:k", "a", 1500) is Claim.WON
        probe = aioredis.Redis.from_url(redis_server.url)
        assert 0 < await probe.pttl("test:claim:k") <= 1500
        assert await probe.ttl("never") == -2
        await s.put("test:decision:k", b"v", 0)
        assert await probe.ttl("test:decision:k") == -1  # 0: no expiry
        await s.put("test:decision:j", b"v", 60)
        assert 0 < await probe.ttl("test:decision:j") <= 60
        await probe.aclose()
        await s.close()

    asyncio.run(scenario())


def test_the_local_store_is_bounded() -> None:
    s = LocalStore(max_entries=3)

    async def scenario() -> None:
        for i in range(10):
            await s.put(f"k{i}", b"v", 0)
            await s.claim(f"c{i}", "a", 1000)
        assert await s.get_many(["k6", "k7", "k8", "k9"]) == [None, b"v", b"v", b"v"]
        assert len(s._claims) == 3

    asyncio.run(scenario())


def test_a_store_that_goes_down_is_answered_locally_and_then_not_asked(redis_server: RedisServer) -> None:
    clock = Clock()
    settings = _settings(redis_server.url, timeout_ms=500, circuit_failures=3, circuit_open_s=5)
    s = RedisStore(settings, clock=clock)

    async def scenario() -> None:
        await s.put("test:decision:k", b"v", 0)
        assert await s.get_many(["test:decision:k"]) == [b"v"]
        redis_server.stop()
        for _ in range(3):
            assert await s.get_many(["test:decision:k"]) == [None]
            assert await s.claim("test:claim:k", "a", 1000) is Claim.UNAVAILABLE
        failures = s.stats.failures
        assert failures >= 3 and s.breaker.state.value == "open" and s.circuit_open
        # Open: nothing is tried, so nothing can be slow.
        for _ in range(100):
            assert await s.get_many(["test:decision:k"]) == [None]
            await s.put("test:decision:k", b"w", 0)
        assert s.stats.failures == failures and s.stats.skipped >= 200
        redis_server.start()
        clock.now += 5.0  # the cool-down: one probe goes through
        for _ in range(20):  # the pool's dead connections fail first
            await s.put("test:decision:k", b"again", 0)
            if s.breaker.state.value == "closed":
                break
            clock.now += 5.0
        assert await s.get_many(["test:decision:k"]) == [b"again"] and not s.circuit_open
        await s.close()

    asyncio.run(scenario())


def test_a_slow_store_costs_at_most_its_timeout(tmp_path: Path) -> None:
    """A peer that accepts connections and never answers (a hung store) is a timeout, not a hang."""

    async def scenario() -> None:
        hung = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = hung.sockets[0].getsockname()[1]
        s = RedisStore(_settings(f"redis://127.0.0.1:{port}/0", timeout_ms=100, circuit_failures=2))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await s.get_many(["k"]) == [None]
        assert await s.claim("c", "a", 1000) is Claim.UNAVAILABLE
        assert await s.get_many(["k"]) == [None]  # open now: not even tried
        assert loop.time() - started < 2.0 and s.stats.skipped == 1
        hung.close()
        await s.close()

    asyncio.run(scenario())


def test_a_password_from_a_file(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret")
    server.start()
    secret = tmp_path / "password"
    secret.write_text("s3cret\n", encoding="utf-8")

    async def scenario() -> None:
        good = RedisStore(_settings(server.url, password_file=str(secret), timeout_ms=2000))
        await good.put("test:decision:k", b"v", 0)
        assert await good.get_many(["test:decision:k"]) == [b"v"]
        bad = RedisStore(_settings(server.url, timeout_ms=2000))  # no password: refused, answered locally
        assert await bad.get_many(["test:decision:k"]) == [None] and bad.stats.failures == 1
        for s in (good, bad):
            await s.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_bad_store_settings_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match=r"store.password_file .* is empty"):
        empty = tmp_path / "empty"
        empty.write_text("", encoding="utf-8")
        RedisStore(_settings("redis://127.0.0.1:1/0", password_file=str(empty)))
    with pytest.raises(config.ConfigError, match=r"store\.url"):
        config.load(environ={"LOGCLASS_STORE__URL": "http://cache:6379"})
    assert open_store(_settings(None)) is None
    printed = config.redacted(config.load(environ={"LOGCLASS_STORE__URL": "redis://user:pw@cache:6379/0"}))
    assert printed["store"]["url"] == "redis://<redacted>@cache:6379/0"


def test_the_store_counts_are_scraped() -> None:
    from logclass.engine.metrics import Metrics

    metrics, s = Metrics(), LocalStore()
    metrics.watch_store(s)

    async def scenario() -> None:
        await s.put("k", b"v", 0)
        await s.get_many(["k", "j"])
        await s.claim("c", "a", 1000)
        await s.claim("c", "b", 1000)

    asyncio.run(scenario())
    sample = metrics.registry.get_sample_value
    assert sample("logclass_store_lookups_total", {"result": "hit"}) == 1
    assert sample("logclass_store_lookups_total", {"result": "miss"}) == 1
    assert sample("logclass_store_claims_total", {"outcome": "won"}) == 1
    assert sample("logclass_store_claims_total", {"outcome": "held"}) == 1
    assert sample("logclass_store_calls_total", {}) == 4 and sample("logclass_store_circuit_open", {}) == 0


def test_store_latency_and_lessons_are_scraped(redis_server: RedisServer) -> None:
    from logclass.engine.metrics import Metrics

    metrics, s = Metrics(), RedisStore(_settings(redis_server.url, timeout_ms=2000))
    metrics.watch_store(s)

    async def scenario() -> None:
        await s.get_many(["k"])
        await s.get_many(["k"])
        await s.put("k", b"v", 0)
        await s.close()

    asyncio.run(scenario())
    s.stats.lessons_published, s.stats.lessons_received, s.stats.resyncs = 2, 3, 1
    sample = metrics.registry.get_sample_value
    assert sample("logclass_store_seconds_count", {"operation": "get"}) == 2
    assert sample("logclass_store_seconds_count", {"operation": "put"}) == 1
    assert sample("logclass_store_seconds_bucket", {"operation": "get", "le": "+Inf"}) == 2
    assert 0 < (sample("logclass_store_seconds_sum", {"operation": "get"}) or 0) < 4.0
    assert sample("logclass_store_lessons_total", {"direction": "published"}) == 2
    assert sample("logclass_store_lessons_total", {"direction": "received"}) == 3
    assert sample("logclass_store_resyncs_total", {}) == 1
