"""The store ``store.url`` names, or none."""

from __future__ import annotations

from logclass.config.settings import StoreSettings
from logclass.store.base import SharedStore
from logclass.store.redis import RedisStore


def open_store(settings: StoreSettings) -> SharedStore | None:
    """None with ``store.url`` null: each process decides alone and nothing connects."""
    return RedisStore(settings) if settings.url else None
