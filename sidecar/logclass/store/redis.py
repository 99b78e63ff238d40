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
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from logclass.config.settings import StoreSettings
from logclass.core.circuit import CircuitBreaker, State
from logclass.errors import LogclassError
from logclass.secrets import SecretError, read_secret
from logclass.store.base import (
    Claim,
    Keys,
    LessonChange,
    LessonChanges,
    LessonPut,
    LessonSnapshot,
    SharedStore,
)

log = logging.getLogger("logclass.store")


class _Down:
    """What a store call gives when the store could not answer."""


DOWN = _Down()
# Deletes the claim only while it is still the caller's: a lease that ran out may be another's now.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# KEYS: lessons, forgotten, log, seq, epoch. ARGV: field, value, max lessons, log length, an epoch
# for a set that has none. One script, so
# the rules hold between racing nodes: 0 covered (an LLM lesson over a correction), -1 full,
# else the change's number.
_PUT_LESSON = """
local old = redis.call('hget', KEYS[1], ARGV[1])
if old and string.sub(old, 1, 1) == 'C' and string.sub(ARGV[2], 1, 1) == 'L' then return 0 end
if not old and redis.call('hlen', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('set', KEYS[5], ARGV[5], 'NX')
local seq = redis.call('incr', KEYS[4])
redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[4], seq .. '-1', 'f', ARGV[1], 'v', ARGV[2])
return seq
"""
# ARGV: field, when, max forgotten, log length, epoch. The change's number.
_FORGET_LESSON = """
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zadd', KEYS[2], ARGV[2], ARGV[1])
local extra = redis.call('zcard', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then redis.call('zremrangebyrank', KEYS[2], 0, extra - 1) end
redis.call('set', KEYS[5], ARGV[5], 'NX')
local seq = redis.call('incr', KEYS[4])
redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[4], seq .. '-1', 'f', ARGV[1], 'w', ARGV[2])
return seq
"""
# Fields read per HSCAN call while taking a snapshot.
_SCAN_COUNT = 1000


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
        # The lessons' calls (a snapshot, a blocking read of the log) run off the records' path:
        # they may take longer than a lookup.
        self.sync_timeout_s = settings.sync_timeout_ms / 1000.0
        self.log_length = settings.lesson_log_length
        self.keys = Keys(settings.key_prefix)
        self.breaker = CircuitBreaker(settings.circuit_failures, settings.circuit_open_s, clock)
        password = _password(settings)
        self._client = self._connect(settings.url, password, self.timeout_s)
        self._sync_client = self._connect(settings.url, password, self.sync_timeout_s * 2)
        self._release = self._client.register_script(_RELEASE)
        self._put_lesson = self._sync_client.register_script(_PUT_LESSON)
        self._forget_lesson = self._sync_client.register_script(_FORGET_LESSON)

    @staticmethod
    def _connect(url: str, password: str | None, timeout_s: float) -> aioredis.Redis:
        try:
            return aioredis.Redis.from_url(
                url,
                password=password,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # No retries inside the client: one timeout is one failure for the breaker.
                retry_on_timeout=False,
                protocol=3,
            )
        except ValueError as exc:
            raise StoreConfigError(f"store.url: {exc}; give redis://host:port/db or rediss://...") from exc

    async def _try(self, operation: str, call: Callable[[], Awaitable[Any]], timeout_s: float | None = None) -> Any:
        """``call()``'s result, or DOWN when the circuit is open or the call times out or fails."""
        if not self.breaker.allow():
            self.stats.skipped += 1
            return DOWN
        self.stats.calls += 1
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(call(), timeout_s or self.timeout_s)
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
        self.stats.observe(operation, time.perf_counter() - started)
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

    async def put_lesson(self, field: str, value: bytes, max_lessons: int) -> LessonPut:
        keys = self._lesson_keys()
        done = await self._try(
            "lesson",
            lambda: self._put_lesson(keys=keys, args=[field, value, max_lessons, self.log_length, uuid.uuid4().hex]),
            self.sync_timeout_s,
        )
        if done is DOWN:
            return LessonPut.UNAVAILABLE
        return LessonPut.COVERED if done == 0 else LessonPut.FULL if done == -1 else LessonPut.STORED

    async def forget_lesson(self, field: str, when: float, max_forgotten: int) -> bool:
        keys = self._lesson_keys()
        done = await self._try(
            "lesson",
            lambda: self._forget_lesson(
                keys=keys, args=[field, when, max_forgotten, self.log_length, uuid.uuid4().hex]
            ),
            self.sync_timeout_s,
        )
        return done is not DOWN

    def _lesson_keys(self) -> list[str]:
        keys = self.keys
        return [keys.lessons, keys.forgotten, keys.lesson_log, keys.lesson_seq, keys.lesson_epoch]

    async def lesson_snapshot(self, limit: int) -> LessonSnapshot | None:
        client = self._sync_client
        head = await self._try(
            "snapshot", lambda: client.mget([self.keys.lesson_seq, self.keys.lesson_epoch]), self.sync_timeout_s
        )
        if head is DOWN:
            return None
        seq, epoch = int(head[0] or 0), _text(head[1]) if head[1] else None
        lessons: dict[str, bytes] = {}
        cursor, complete = 0, True
        while complete:
            page = await self._try(
                "snapshot",
                lambda c=cursor: client.hscan(self.keys.lessons, c, count=_SCAN_COUNT),  # type: ignore[misc]
                self.sync_timeout_s,
            )
            if page is DOWN:
                return None
            cursor, found = page
            for name, value in found.items():
                if len(lessons) >= limit:
                    complete = False
                    break
                lessons[_text(name)] = value
            if not cursor:
                break
        forgotten = await self._forgotten(limit)
        if forgotten is None:
            return None
        return LessonSnapshot(seq, epoch, lessons, forgotten, complete)

    async def _forgotten(self, limit: int) -> dict[str, float] | None:
        # The latest drops (the set keeps its own bound; this one guards against a set grown by
        # another writer).
        found = await self._try(
            "snapshot",
            lambda: self._sync_client.zrange(self.keys.forgotten, -limit, -1, withscores=True),
            self.sync_timeout_s,
        )
        if found is DOWN:
            return None
        return {_text(name): float(score) for name, score in found}

    async def lesson_changes(self, after: int, block_ms: int, count: int) -> LessonChanges | None:
        async def read() -> Any:
            async with self._sync_client.pipeline(transaction=False) as pipe:
                pipe.mget([self.keys.lesson_seq, self.keys.lesson_epoch])
                # BLOCK 0 would wait forever: 0 here means do not wait.
                pipe.xread({self.keys.lesson_log: f"{after}-1"}, count=count, block=block_ms or None)
                return await pipe.execute()

        found = await self._try("changes", read, self.sync_timeout_s + block_ms / 1000.0)
        if found is DOWN:
            return None
        (seq, epoch), streams = found
        changes = [_change(entry) for entry in _entries(streams)]
        return LessonChanges(int(seq or 0), _text(epoch) if epoch else None, changes)

    @property
    def circuit_open(self) -> bool:
        return self.breaker.state is not State.CLOSED

    async def close(self) -> None:
        await self._client.aclose()
        await self._sync_client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _entries(streams: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """XREAD's entries: RESP3 gives {stream: [[entry, ...]]}, RESP2 [[stream, [entry, ...]]]."""
    if not streams:
        return []
    groups = list(streams.values()) if isinstance(streams, dict) else [entries for _, entries in streams]
    out: list[tuple[Any, dict[Any, Any]]] = []
    for group in groups:
        entries = group[0] if group and isinstance(group[0], list) else group
        out.extend((entry_id, dict(fields)) for entry_id, fields in entries)
    return out


def _change(entry: tuple[Any, dict[Any, Any]]) -> LessonChange:
    entry_id, fields = entry
    seq = int(_text(entry_id).split("-", 1)[0])
    field = _text(fields.get(b"f", b""))
    value = fields.get(b"v")
    when = fields.get(b"w")
    return LessonChange(seq, field, value, float(when) if when is not None else 0.0)
