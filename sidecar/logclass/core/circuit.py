"""A circuit breaker: stop calling a dependency that keeps failing, then probe it now and again.

closed: calls go through; ``failures`` consecutive failures open it.
open: calls are refused at once for ``cooldown_s``; nothing touches the network.
half-open: after the cooldown one call (the probe) goes through while others are still refused;
its success closes the circuit, its failure opens it for another cooldown.

The caller asks ``allow()`` before a call and reports ``record_success()`` or
``record_failure()`` after it. A probe whose outcome is never reported (its task was cancelled)
is forgotten after one cooldown, so a lost probe cannot hold the circuit half-open forever.
Thread-safe, so an inference thread and an event loop can share one breaker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum


class State(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError("circuit failures must be at least 1")
        if cooldown_s < 0:
            raise ValueError("circuit cooldown_s must not be negative")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probe_since: float | None = None
        # Calls refused without being attempted: the evidence that an open circuit spares the network.
        self.rejected = 0
        self.opened = 0

    @property
    def state(self) -> State:
        with self._lock:
            return self._state()

    def _state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return State.OPEN
        return State.HALF_OPEN

    def retry_in(self) -> float:
        """Seconds until the next probe may go through; 0 when calls are allowed now."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def allow(self) -> bool:
        """Whether a call may go through now; in half-open state, True makes the caller the probe."""
        with self._lock:
            state = self._state()
            if state is State.CLOSED:
                return True
            now = self._clock()
            probe_lost = self._probe_since is not None and now - self._probe_since >= self.cooldown_s
            if state is State.HALF_OPEN and (self._probe_since is None or probe_lost):
                self._probe_since = now
                return True
            self.rejected += 1
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._probe_since = None

    def record_failure(self) -> bool:
        """Count a failure; True when this failure opened (or re-opened) the circuit."""
        with self._lock:
            self._consecutive += 1
            probing = self._probe_since is not None
            if self._opened_at is None:
                if self._consecutive < self.failures:
                    return False
                self.opened += 1
            elif not probing:
                # A call let through before the circuit opened failed late: the cooldown stands.
                return False
            # The threshold reached or the probe failed: cool down from now.
            self._opened_at = self._clock()
            self._probe_since = None
            return True
