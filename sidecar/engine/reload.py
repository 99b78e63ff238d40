"""The regex rules built beside the running ones, for a hot reload's narrow swap (rules only).

The rest of a reload (settings, the engine swap, refusals and metrics) is ``logclass.reload``'s;
this is the part the engine layer owns: a new ``RegexTier`` from a file, ready for
``Engine.swap_fast_tier``, which lands it between two fast-lane slices of any request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from logclass.tiers.regex import RegexTier, load_rules

# What a reload can re-read, in the order a report lists them (SIGHUP, the watch, Admin.Reload).
RELOAD_PARTS = ("rules", "config", "bundle")


@dataclass(frozen=True, slots=True)
class BuiltRules:
    tier: RegexTier
    sha256: str
    count: int


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_rules(path: Path) -> BuiltRules:
    """Raises ``RuleError`` (a rule that does not compile, names it) or ``OSError``. Slow for a
    large file: run it in a worker thread, not on the event loop."""
    digest = file_sha256(path)
    rules = load_rules(path)
    return BuiltRules(RegexTier(rules), digest, len(rules))
