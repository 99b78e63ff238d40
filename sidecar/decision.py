"""The values that flow through the pipeline: a record in, a verdict from a tier, a decision out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogRecord:
    source: str
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """A tier's answer for one record."""

    label: str
    confidence: float
    # Which rule or model produced it, for explanations (regex rule name, LLM model name).
    detail: str = ""
    # Reported instead of the tier's own name (the LLM tier's "llm_pending"); "" for the tier's.
    tier: str = ""
    # False for a stand-in answer (LLM late or down): the router must not cache it, so the next
    # record of the template asks again and gets the real answer.
    final: bool = True


# Tier names that appear in decisions besides the tiers themselves.
TIER_NONE = "none"  # no tier decided: the fallback label
TIER_LLM_PENDING = "llm_pending"  # the LLM missed its budget; the answer is on its way to the cache


@dataclass(frozen=True, slots=True)
class Decision:
    """What the pipeline tells the caller about one record.

    Decisions are immutable so that one cached instance can be handed to every record of its
    template without copying.
    """

    label: str
    confidence: float
    tier: str
    template_id: str
    model_version: str
    detail: str = ""
    # Why the record could not be classified (empty_message, message_too_long, invalid_utf8).
    error: str = ""
