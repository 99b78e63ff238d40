"""LLM tier hook: the router takes any ``Tier`` here, or none.

Backends (a vLLM server, embedded llama.cpp) plug in behind the same ``Tier`` protocol; with
``llm.backend: none`` there is no LLM tier and escalated records get the fallback label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.tiers.base import Tier


class LlmConfigError(ValueError):
    pass


def build_llm_tier(llm_config: Mapping[str, Any]) -> Tier | None:
    backend = llm_config.get("backend", "none")
    if backend in ("none", "auto"):  # auto: backends land with the LLM tier
        return None
    raise LlmConfigError(f"llm.backend {backend!r} is not available in this build; use 'none'")
