"""The store within one process: a bounded map of decisions and a map of claims with leases.
For a single process (nothing to share) and for the engine's unit tests, on a clock they set."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from logclass.store.base import Claim, SharedStore


class LocalStore(SharedStore):
    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.max_entries = max_entries
        self._clock = clock
        # key -> (value, expiry; None: none), oldest first: past max_entries the oldest goes.
        self._values: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._claims: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.stats.calls += 1
        now = self._clock()
        out: list[bytes | None] = []
        for key in keys:
            entry = self._values.get(key)
            if entry is not None and entry[1] is not None and entry[1] <= now:
                del self._values[key]
                entry = None
            out.append(entry[0] if entry is not None else None)
        self.stats.hits += sum(v is not None for v in out)
        self.stats.misses += sum(v is None for v in out)
        return out

    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        self.stats.calls += 1
        self._values[key] = (value, self._clock() + ttl_s if ttl_s else None)
        self._values.move_to_end(key)
        while len(self._values) > self.max_entries:
            self._values.popitem(last=False)

    async def claim(self, key: str, owner: str, lease_ms: int) -> Claim:
        self.stats.calls += 1
        now = self._clock()
        held = self._claims.get(key)
        if held is not None and held[1] > now and held[0] != owner:
            self.stats.claims_held += 1
            return Claim.HELD
        self._claims[key] = (owner, now + lease_ms / 1000.0)
        self._claims.move_to_end(key)
        while len(self._claims) > self.max_entries:
            self._claims.popitem(last=False)
        self.stats.claims_won += 1
        return Claim.WON

    async def release(self, key: str, owner: str) -> None:
        self.stats.calls += 1
        held = self._claims.get(key)
        if held is not None and held[0] == owner:
            del self._claims[key]
