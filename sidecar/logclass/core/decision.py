"""The values that flow through the engine: a record in, a tier's outcome, a decision out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

# (source, template): the unit every model tier decides once. Decisions are cached per source
# because sources may be routed to different tiers and may word the same template differently.
TemplateKey: TypeAlias = tuple[str, str]


@dataclass(frozen=True, slots=True)
class LogRecord:
    source: str
    message: str


@dataclass(frozen=True, slots=True)
class Item:
    """What a model tier is asked about: one representative record of a template."""

    record: LogRecord
    key: TemplateKey

    @property
    def template(self) -> str:
        return self.key[1]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A tier's confident answer for one item: final, cached for the template."""

    label: str
    confidence: float
    # Which rule or model produced it, for explanations (regex rule name, LLM model name).
    detail: str = ""
    # False: an answer for this record alone (the LLM's for a line the guard found an order in),
    # neither learnt nor cached for its template.
    shareable: bool = True


@dataclass(frozen=True, slots=True)
class Deferred:
    """A tier cannot answer now (LLM server down, circuit open, queue full). The record gets the
    fallback label and nothing is cached, so the next record of the template asks again."""

    reason: str


# A tier's outcome per item: a Verdict, a Deferred, or None to escalate to the next tier.
Outcome: TypeAlias = "Verdict | Deferred | None"

# Tier names that appear in decisions besides the tiers themselves.
TIER_NONE = "none"  # no tier decided: the fallback label
# The request's budget ended before its model answer: the fallback label, not cached; the answer
# is still being computed and fills the cache for the next record of the template.
TIER_PENDING = "pending"

# Per-record errors (ClassifyResult.error).
ERROR_EMPTY = "empty_message"
ERROR_TOO_LONG = "message_too_long"
ERROR_UTF8 = "invalid_utf8"
ERROR_SOURCE_TOO_LONG = "source_too_long"
ERROR_INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine tells the caller about one record.

    Decisions are immutable so that one cached instance can be handed to every record of its
    template without copying.
    """

    label: str
    confidence: float
    tier: str
    template_id: str
    model_version: str
    detail: str = ""
    # Why the record could not be classified (empty_message, message_too_long, invalid_utf8,
    # source_too_long, internal).
    error: str = ""
