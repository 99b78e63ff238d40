"""Hot reload, part 1 (WIP, issue 19): the regex rules, on SIGHUP. See DESIGN-reload.md.

The new rules are read and compiled beside the running ones (in a worker thread: a large file
must not stall the event loop), then swapped in on the event loop thread, where the fast lane
runs, so no request sees half a swap. A file that does not load is refused: the reason is
logged, ``logclass_reloads_total{part="rules",outcome="refused"}`` counts it, and the old rules
keep serving. Not yet reloaded here: the config's live sections and the model bundle.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from logclass.engine.engine import Engine
from logclass.engine.metrics import Metrics
from logclass.tiers.regex import RegexTier, RuleError, load_rules

log = logging.getLogger("logclass.reload")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    message: str


def _build(path: Path) -> tuple[RegexTier, str, int]:
    rules = load_rules(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return RegexTier(rules), digest, len(rules)


class RulesReloader:
    """Reloads ``path`` into ``engine``'s regex tier; one reload at a time."""

    def __init__(self, engine: Engine, path: Path, metrics: Metrics) -> None:
        self.engine, self.path, self.metrics = engine, path, metrics
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadResult:
        async with self._lock:
            if self.engine.tier("regex") is None:
                return self._refused("router.tiers has no regex tier: nothing to reload")
            loop = asyncio.get_running_loop()
            try:
                tier, digest, count = await loop.run_in_executor(None, _build, self.path)
            except (RuleError, OSError) as exc:
                return self._refused(str(exc))
            # Back on the event loop thread: between two fast-lane slices of any request.
            self.engine.swap_fast_tier(tier)
            self.metrics.reloads.labels("rules", "ok").inc()
            message = f"reloaded {count} regex rules from {self.path} (sha256 {digest}); exact cache emptied"
            log.info("%s", message)
            return ReloadResult(True, message)

    def _refused(self, reason: str) -> ReloadResult:
        self.metrics.reloads.labels("rules", "refused").inc()
        message = f"reload refused, the running rules keep serving: {reason}"
        log.error("%s", message)
        return ReloadResult(False, message)
