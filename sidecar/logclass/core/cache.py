"""The decision cache: (source, template) -> Decision, least recently used evicted first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class LruCache(Generic[V]):
    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("cache capacity must be >= 0 (0 disables the cache)")
        self.capacity = capacity
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> V | None:
        value = self._data.get(key)
        if value is None:
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)
            self.stats.evictions += 1

    def peek(self, key: Hashable) -> V | None:
        """The value, leaving order and statistics as they are."""
        return self._data.get(key)

    def drop_where(self, doomed: Callable[[Hashable], bool]) -> int:
        """Removes the entries whose key ``doomed`` picks (a walk of the whole cache: rare use)."""
        keys = [key for key in self._data if doomed(key)]
        for key in keys:
            del self._data[key]
        return len(keys)

    def clear(self) -> None:
        self._data.clear()
