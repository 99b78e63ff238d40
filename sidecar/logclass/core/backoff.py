"""Exponential backoff, the one schedule every retry loop uses (gRPC client, LLM server calls,
full lanes in uploads, the relay's next hop)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2**62 times any sane initial delay is far past every cap; a larger exponent would overflow the
# float a loop that has failed for hours (the relay's next hop down overnight) computes.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial_s`` doubled per attempt, at most ``max_s``. ``jitter``: each delay drawn from
    [0.5, 1.5) of it, so callers that failed together retry apart."""

    initial_s: float
    max_s: float = float("inf")
    jitter: bool = False

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt + 1`` (``attempt`` counts from 0)."""
        delay = min(self.initial_s * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT), self.max_s)
        return delay * (0.5 + random.random()) if self.jitter else delay
