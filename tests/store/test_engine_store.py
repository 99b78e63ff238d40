"""Two engines (two nodes) on a real redis-server: a template one decides is answered by the
other from the store, without its model."""

from __future__ import annotations

import asyncio
import dataclasses

from logclass import config
from logclass.store.redis import RedisStore
from tests.engine.test_shared import NEW, CountingTier, _engine_on
from tests.store.redis_server import RedisServer


def test_two_nodes_share_a_decision_through_redis(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        settings = dataclasses.replace(config.load(environ={}).store, url=redis_server.url, timeout_ms=2000)
        store_a, store_b = RedisStore(settings), RedisStore(settings)
        tier_a, tier_b = CountingTier(), CountingTier()
        a, b = _engine_on(store_a, tier_a), _engine_on(store_b, tier_b)
        tier_a.gate.set()
        decided = await a.classify(NEW, None)
        await asyncio.gather(*a._sharing)
        answered = await b.classify(NEW, None)
        assert [d.label for d in answered] == [d.label for d in decided] and tier_b.asked == []
        assert store_b.stats.hits == 2 and store_b.stats.failures == 0
        for engine in (a, b):
            await engine.close()
        for store in (store_a, store_b):
            await store.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
