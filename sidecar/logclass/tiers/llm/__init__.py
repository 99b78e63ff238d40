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

from logclass.config.settings import LlmSettings, Settings
from logclass.core.labelset import LabelExample, LabelSet, LabelSetError
from logclass.errors import LogclassError
from logclass.tiers.llm.backend import LlmBackend, LlmUnavailable
from logclass.tiers.llm.model_files import ModelFileError
from logclass.tiers.llm.prompt import PromptBuilder
from logclass.tiers.llm.tier import LlmTier, TeacherLog

log = logging.getLogger("logclass.llm")
FALLBACK_DESCRIPTION = "the line fits none of the other labels"


class LlmConfigError(LogclassError):
    pass


def choose_backend(llm: LlmSettings) -> str:
    """What ``auto`` means here: a configured server, else llama.cpp if installed, else none."""
    if llm.backend != "auto":
        return llm.backend
    if llm.server.url:
        return "vllm"
    if importlib.util.find_spec("llama_cpp") is not None:
        return "llamacpp"
    log.warning("LLM tier off: no llm.server.url and llama.cpp is not installed (pip install 'logclass[llamacpp]')")
    return "none"


def build_backend(name: str, llm: LlmSettings) -> LlmBackend:
    if name == "vllm":
        if not llm.server.url:
            raise LlmConfigError("llm.backend is vllm but llm.server.url is not set: give the server's /v1 base URL")
        from logclass.tiers.llm.openai_http import OpenAiHttpBackend

        return OpenAiHttpBackend.from_settings(llm)
    from logclass.tiers.llm.llamacpp import LlamaCppBackend

    return LlamaCppBackend.from_settings(llm.llamacpp)


def label_set_from_settings(llm: LlmSettings) -> LabelSet:
    """The label set the ``llm`` section gives (``llm.labels``, ``llm.examples``), for configurations
    without a model bundle."""
    descriptions = dict(llm.labels or {})
    examples = tuple(LabelExample(e.source, e.message, e.label) for e in llm.examples or ())
    try:
        return LabelSet(tuple(descriptions), descriptions, examples)
    except LabelSetError as exc:
        raise LlmConfigError(f"llm.labels / llm.examples: {exc}") from exc


def label_set_from_llm_config(llm_config: Mapping[str, Any]) -> LabelSet:
    """The label set of plain data shaped like the ``llm`` section (``labels``: label -> description,
    or a list of labels; ``examples``), e.g. a labels.yaml file."""
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


def build_prompts(settings: Settings, label_set: LabelSet) -> PromptBuilder:
    """The tier's prompts: ``label_set`` plus the router's fallback label, for lines that fit none."""
    answer_set = label_set.with_label(settings.router.fallback_label, FALLBACK_DESCRIPTION)
    try:
        return PromptBuilder(settings.llm.instructions, answer_set, settings.llm.max_message_chars)
    except ValueError as exc:
        raise LlmConfigError(str(exc)) from exc


def build_llm_tier(settings: Settings, label_set: LabelSet) -> LlmTier | None:
    """The configured LLM tier answering within ``label_set`` plus the router's fallback label,
    or None for none."""
    llm = settings.llm
    name = choose_backend(llm)
    if name == "none":
        return None
    prompts = build_prompts(settings, label_set)
    try:
        backend = build_backend(name, llm)
    except (ModelFileError, LlmUnavailable) as exc:
        if llm.backend != "auto":
            raise LlmConfigError(str(exc)) from exc
        # auto is best effort: a sidecar without its LLM still classifies; say loudly why.
        log.warning("LLM tier off: %s", exc)
        return None
    return LlmTier(
        backend,
        prompts,
        min_confidence=llm.min_confidence,
        learn_min_confidence=llm.learn_min_confidence,
        max_concurrency=llm.max_concurrency,
        teacher=TeacherLog(llm.teacher_file) if llm.teacher_file else None,
    )
