"""Warnings that repeat under sustained trouble (a full buffer, a slow pipeline) at most once per
interval and kind, with how many were held back, so an outage cannot flood the relay's own log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    def __init__(
        self, logger: logging.Logger, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({held} more like this since the last report)" if held else ""
        self._logger.warning(message + suffix, *args)
