"""The shared store on Valkey or Redis (one protocol), through redis-py's asyncio client.

Every call is bounded by ``store.timeout_ms`` and guarded by a circuit breaker: a store that is
down, slow or refusing costs a node at most ``circuit_failures`` timeouts before it stops asking
for ``circuit_open_s``, then one probe. Meanwhile each call answers as if the store held nothing,
so the node decides alone, as without a store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from logclass.config.settings import StoreSettings
from logclass.core.circuit import CircuitBreaker, State
from logclass.errors import LogclassError
from logclass.secrets import SecretError, read_secret
from logclass.store.base import Claim, SharedStore

log = logging.getLogger("logclass.store")


class _Down:
    """What a store call gives when the store could not answer."""


DOWN = _Down()
# Deletes the claim only while it is still the caller's: a lease that ran out may be another's now.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class StoreConfigError(LogclassError):
    """store.url or store.password_file cannot be used; the message names the fix."""


def _password(settings: StoreSettings) -> str | None:
    try:
        value = read_secret(None, settings.password_file, "store.password")
    except SecretError as exc:
        raise StoreConfigError(str(exc)) from exc
    return str(value) if value else None


class RedisStore(SharedStore):
    def __init__(self, settings: StoreSettings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if not settings.url:
            raise StoreConfigError("store.url is null: there is no store to connect to")
        self.timeout_s = settings.timeout_ms / 1000.0
        self.breaker = CircuitBreaker(settings.circuit_failures, settings.circuit_open_s, clock)
        try:
            self._client: aioredis.Redis = aioredis.Redis.from_url(
                settings.url,
                password=_password(settings),
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                # No retries inside the client: one timeout is one failure for the breaker.
                retry_on_timeout=False,
                protocol=3,
            )
        except ValueError as exc:
            raise StoreConfigError(f"store.url: {exc}; give redis://host:port/db or rediss://...") from exc
        self._release = self._client.register_script(_RELEASE)

    async def _try(self, operation: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()``'s result, or DOWN when the circuit is open or the call times out or fails."""
        if not self.breaker.allow():
            self.stats.skipped += 1
            return DOWN
        self.stats.calls += 1
        try:
            result = await asyncio.wait_for(call(), self.timeout_s)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.stats.failures += 1
            if self.breaker.record_failure():
                log.warning(
                    "store: %s failed (%s); deciding locally, next try in %.1f s",
                    operation,
                    type(exc).__name__,
                    self.breaker.cooldown_s,
                )
            return DOWN
        self.breaker.record_success()
        return result

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self._try("get", lambda: self._client.mget(list(keys)))
        found: list[Any] = [None] * len(keys) if values is DOWN else list(values)
        out: list[bytes | None] = [v if isinstance(v, bytes) else None for v in found]
        self.stats.hits += sum(v is not None for v in out)
        self.stats.misses += sum(v is None for v in out)
        return out

    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        await self._try("put", lambda: self._client.set(key, value, ex=ttl_s or None))

    async def claim(self, key: str, owner: str, lease_ms: int) -> Claim:
        taken = await self._try("claim", lambda: self._client.set(key, owner, nx=True, px=lease_ms))
        if taken is DOWN:
            return Claim.UNAVAILABLE
        if not taken:
            # Held already: by this owner (taken again, lease renewed), or by another node.
            holder = await self._try("claim", lambda: self._client.get(key))
            if holder is DOWN:
                return Claim.UNAVAILABLE
            if holder != owner.encode():
                self.stats.claims_held += 1
                return Claim.HELD
            await self._try("claim", lambda: self._client.pexpire(key, lease_ms))
        self.stats.claims_won += 1
        return Claim.WON

    async def release(self, key: str, owner: str) -> None:
        await self._try("release", lambda: self._release(keys=[key], args=[owner]))

    @property
    def circuit_open(self) -> bool:
        return self.breaker.state is not State.CLOSED

    async def close(self) -> None:
        await self._client.aclose()
