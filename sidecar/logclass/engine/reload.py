"""The regex rules built beside the running ones, for a hot reload's narrow swap (rules only).

The rest of a reload (settings, the engine swap, refusals and metrics) is ``logclass.reload``'s;
this is the part the engine layer owns: a new ``RegexTier`` from a file, ready for
``Engine.swap_fast_tier``, which lands it between two fast-lane slices of any request.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from logclass.core.bundle import MANIFEST
from logclass.core.hashing import sha256_file
from logclass.errors import LogclassError
from logclass.tiers.regex import RegexTier, load_rules

# What a reload can re-read, in the order a report lists them (SIGHUP, the watch, Admin.Reload).
RELOAD_PARTS = ("rules", "config", "bundle")


class UnknownReloadParts(LogclassError):
    """A reload asked for parts that do not exist."""


def check_parts(parts: Collection[str]) -> None:
    """The one check of a reload's parts (SIGHUP and the watch ask for all; Admin.Reload names them)."""
    unknown = sorted(set(parts) - set(RELOAD_PARTS))
    if unknown:
        raise UnknownReloadParts(f"unknown reload parts {unknown}: give some of {list(RELOAD_PARTS)}, or none for all")


@dataclass(frozen=True, slots=True)
class BuiltRules:
    tier: RegexTier
    sha256: str
    count: int


def content_mark(path: Path) -> tuple[Path, str]:
    """What a reload compares a file by: its resolved path and the SHA-256 of its content (a
    bundle directory: of its manifest, which holds every other file's hash), or why it is
    unreadable. Mtimes are not trusted: kubelet's ``..data`` swap and a flipped bundle symlink
    keep or reset them unpredictably."""
    resolved = path.resolve()
    target = resolved / MANIFEST if resolved.is_dir() else resolved
    try:
        return resolved, sha256_file(target)
    except OSError as exc:
        return resolved, f"unreadable ({exc.strerror})"


def build_rules(path: Path) -> BuiltRules:
    """Raises ``RuleError`` (a rule that does not compile, names it) or ``OSError``. Slow for a
    large file: run it in a worker thread, not on the event loop."""
    digest = sha256_file(path)
    rules = load_rules(path)
    return BuiltRules(RegexTier(rules), digest, len(rules))
