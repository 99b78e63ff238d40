"""The one backoff schedule of every retry loop."""

from __future__ import annotations

import random

from logclass.core.backoff import Backoff


def test_the_delay_doubles_to_its_cap() -> None:
    backoff = Backoff(0.05, 1.0)
    assert [backoff.delay(a) for a in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_loop_failing_for_days_never_overflows() -> None:
    # The relay's next hop down overnight: thousands of failures; 2**2000 * 0.5 is no float.
    assert Backoff(0.5, 30.0).delay(2000) == 30.0
    assert Backoff(0.1).delay(10**6) > 1e17


def test_jitter_spreads_callers_that_failed_together() -> None:
    random.seed(3)
    delays = [Backoff(0.1, jitter=True).delay(3) for _ in range(200)]
    assert all(0.4 <= d < 1.2 for d in delays)
    assert max(delays) - min(delays) > 0.5
