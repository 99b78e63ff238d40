"""Which settings a hot reload may change in a running process, and which need a restart.

A reload compares the settings it re-read with the running ones, field by field (dotted paths,
``server.listen``). *Live* fields are read only when the engine is built (thresholds, routes,
tiers, the LLM prompt and labels, the bundle, the caches' sizes): a new engine beside the old one
takes them; the relay's tagging keys are re-read by its tagger. Everything else is held by
something that outlives an engine swap (listening sockets, TLS and tokens, the lanes' bounds and
the front ends' limits, the encoder and LLM backend processes, the relay's server, buffer,
upstreams and forwarder), so a change there is refused as a whole rather than half applied.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from logclass.config.settings import Settings

# A changed path is live when it equals one of these or lies below one.
LIVE = (
    "model.bundle",
    "router",
    "regex",
    "memory",
    "templates",
    "embedding.min_confidence",
    "embedding.label_min_confidence",
    "embedding.out_of_distribution",
    "llm.min_confidence",
    "llm.max_message_chars",
    "llm.instructions",
    "llm.labels",
    "llm.examples",
)
# The relay's tagging, read per request by its tagger (``Tagger.retarget``); no new engine needed.
RELAY_TAGGING = (
    "relay.output",
    "relay.message_key",
    "relay.source_key",
    "relay.source",
    "relay.opt_out",
    "relay.fallback_label",
    "relay.tag_missing_message",
    "relay.budget_ms",
    "relay.classify_timeout_ms",
)
# Below a live prefix but held by the process: the learnt memory is opened once and outlives engines.
PINNED = ("memory.learnt_file", "memory.learnt_max_lessons", "memory.learnt_file_max_bytes")
# Changes here only affect the rules: the narrow swap (a new regex tier) takes them.
RULES = ("regex",)


def _flat(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from _flat(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def changed(old: Settings, new: Settings) -> list[str]:
    """The dotted paths whose values differ, sorted."""
    before, after = dict(_flat(old.to_dict(), "")), dict(_flat(new.to_dict(), ""))
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def restart_only(paths: list[str]) -> list[str]:
    """Of ``paths``, those a running process cannot take."""
    return [p for p in paths if _under(p, PINNED) or not _under(p, LIVE + RELAY_TAGGING)]


def engine_paths(paths: list[str]) -> list[str]:
    """Of ``paths``, those the engine is built from (not the relay's tagging)."""
    return [p for p in paths if not _under(p, RELAY_TAGGING)]


def rules_only(paths: list[str]) -> bool:
    return all(_under(p, RULES) for p in paths)
