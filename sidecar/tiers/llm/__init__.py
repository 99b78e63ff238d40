"""The LLM tier: which backend to build from configuration, and the tier around it.

Backends (one module each, behind ``backend.LlmBackend``): ``openai_http`` for vLLM or any
OpenAI-compatible server, ``llamacpp`` for an embedded GGUF model. ``tier.LlmTier`` turns answers into
outcomes and writes the teacher file; the engine's LLM lane schedules it. The answer set is a
``LabelSet`` (the model bundle's), plus the router's fallback label.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from typing import Any

from logclass.core.labelset import LabelExample, LabelSet, LabelSetError
from logclass.errors import LogclassError
from logclass.tiers.llm.backend import LlmBackend, LlmUnavailable
from logclass.tiers.llm.model_files import ModelFileError
from logclass.tiers.llm.prompt import PromptBuilder
from logclass.tiers.llm.tier import LlmTier, TeacherLog

log = logging.getLogger("logclass.llm")
BACKENDS = ("auto", "none", "vllm", "llamacpp")
FALLBACK_DESCRIPTION = "the line fits none of the other labels"


class LlmConfigError(LogclassError):
    pass


def choose_backend(llm_config: Mapping[str, Any]) -> str:
    """What ``auto`` means here: a configured server, else llama.cpp if installed, else none."""
    backend = str(llm_config.get("backend", "auto"))
    if backend not in BACKENDS:
        raise LlmConfigError(f"llm.backend {backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if (llm_config.get("server") or {}).get("url"):
        return "vllm"
    if importlib.util.find_spec("llama_cpp") is not None:
        return "llamacpp"
    log.warning("LLM tier off: no llm.server.url and llama.cpp is not installed (pip install 'logclass[llm]')")
    return "none"


def build_backend(name: str, llm_config: Mapping[str, Any]) -> LlmBackend:
    if name == "vllm":
        if not (llm_config.get("server") or {}).get("url"):
            raise LlmConfigError("llm.backend is vllm but llm.server.url is not set: give the server's /v1 base URL")
        from logclass.tiers.llm.openai_http import OpenAiHttpBackend

        return OpenAiHttpBackend.from_config(llm_config)
    from logclass.tiers.llm.llamacpp import LlamaCppBackend

    return LlamaCppBackend.from_config(llm_config)


def label_set_from_llm_config(llm_config: Mapping[str, Any]) -> LabelSet:
    """The label set the ``llm`` config section describes (``llm.labels``: label -> description,
    or a list of labels; ``llm.examples``), for configurations that predate label sets in bundles."""
    labels = llm_config.get("labels") or {}
    if isinstance(labels, Mapping):
        descriptions = {str(k): "" if v is None else str(v) for k, v in labels.items()}
    else:
        descriptions = {str(label): "" for label in labels}
    try:
        examples = tuple(
            LabelExample(str(e["source"]), str(e["message"]), str(e["label"])) for e in llm_config.get("examples") or ()
        )
        return LabelSet(tuple(descriptions), descriptions, examples)
    except (KeyError, TypeError) as exc:
        raise LlmConfigError(f"llm.examples need source, message and label each ({exc})") from exc
    except LabelSetError as exc:
        raise LlmConfigError(f"llm.labels / llm.examples: {exc}") from exc


def build_prompts(cfg: Mapping[str, Any], label_set: LabelSet) -> PromptBuilder:
    """The tier's prompts: ``label_set`` plus the router's fallback label, for lines that fit none."""
    answer_set = label_set.with_label(cfg["router"]["fallback_label"], FALLBACK_DESCRIPTION)
    try:
        return PromptBuilder(cfg["llm"]["instructions"], answer_set, cfg["llm"]["max_message_chars"])
    except ValueError as exc:
        raise LlmConfigError(str(exc)) from exc


def build_llm_tier(cfg: Mapping[str, Any], label_set: LabelSet) -> LlmTier | None:
    """The configured LLM tier answering within ``label_set`` plus the router's fallback label,
    or None for none."""
    llm = cfg["llm"]
    name = choose_backend(llm)
    if name == "none":
        return None
    prompts = build_prompts(cfg, label_set)
    try:
        backend = build_backend(name, llm)
    except (ModelFileError, LlmUnavailable) as exc:
        if llm.get("backend", "auto") != "auto":
            raise LlmConfigError(str(exc)) from exc
        # auto is best effort: a sidecar without its LLM still classifies; say loudly why.
        log.warning("LLM tier off: %s", exc)
        return None
    return LlmTier(
        backend,
        prompts,
        min_confidence=llm["min_confidence"],
        max_concurrency=llm["max_concurrency"],
        teacher=TeacherLog(llm["teacher_file"]) if llm.get("teacher_file") else None,
    )
