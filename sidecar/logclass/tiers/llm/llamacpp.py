"""Embedded llama.cpp backend: a GGUF model in this process, answering one label at a time.

A llama.cpp context is not thread-safe and its KV cache is one conversation, so every inference
runs on one dedicated thread; concurrent ``choose`` calls queue there and the event loop never
blocks. Consecutive prompts share the system message and worked examples, and llama.cpp reuses
that prefix from its KV cache, so only the log line itself is evaluated after the first call.

Output is constrained by a GBNF grammar whose only sentences are the labels: whatever a log line
says, the model can only produce a configured label.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from logclass.config.settings import LlamaCppSettings
from logclass.core.circuit import CircuitBreaker
from logclass.tiers.llm.backend import LlmAnswer, LlmUnavailable, Prompt, check_label
from logclass.tiers.llm.model_files import resolve_gguf

log = logging.getLogger("logclass.llm")

LLM_INSTALL = "pip install 'logclass[llamacpp]'"
_GRAMMAR_CACHE_SIZE = 64


def import_llama_cpp() -> Any:
    """The llama_cpp module; typed ``Any`` so this file type-checks with or without it installed."""
    try:
        import llama_cpp  # type: ignore[import-not-found, unused-ignore]
    except (ImportError, OSError, RuntimeError) as exc:  # OSError: the shared library failed to load
        raise LlmUnavailable(f"llama.cpp is not available ({exc}): {LLM_INSTALL}") from exc
    return llama_cpp


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal; labels come from configuration and may hold anything."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char in "\n\r\t":
            escaped.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def labels_grammar(labels: tuple[str, ...]) -> str:
    # llama.cpp aborts the sampler on a grammar it cannot parse, so refuse the one case that
    # cannot be expressed (an empty alternative) here, with a readable error.
    if not labels or not all(labels):
        raise ValueError(f"the LLM answer set must be non-empty labels, got {labels!r}")
    return "root ::= " + " | ".join(gbnf_literal(label) for label in labels)


class _TokenLogits:
    """Logits processor that records the raw logits of every generated position.

    Token log-probabilities from ``create_chat_completion(logprobs=True)`` need the model loaded
    with ``logits_all``, which keeps logits for every prompt token: measured 2.5x slower per
    answer and ~1.8 GB more memory with Qwen2.5-1.5B. The processor sees the same logits (before
    the grammar mask) for the few generated tokens only, at the cost of one vocabulary-sized copy
    per token.
    """

    def __init__(self) -> None:
        self._prompt_tokens = -1
        self._rows: list[npt.NDArray[np.single]] = []
        self._tokens: list[int] = []

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        if self._prompt_tokens < 0:
            self._prompt_tokens = len(input_ids)
        # input_ids has grown by the tokens chosen at the earlier positions.
        self._tokens = [int(t) for t in input_ids[self._prompt_tokens :]]
        self._rows.append(np.array(scores, dtype=np.single, copy=True))
        return scores

    def probability(self) -> float:
        """Probability of the generated tokens (the label) under the unconstrained model.

        Like OpenAI/vLLM logprobs: a model that wanted to answer something outside the label set
        gets a low confidence even though the grammar forced a label. The final step (end of
        generation) is not part of the answer and is left out.
        """
        log_probability = 0.0
        for row, token in zip(self._rows, self._tokens, strict=False):
            shifted = row.astype(np.float64) - float(row.max())
            log_probability += float(shifted[token]) - math.log(float(np.exp(shifted).sum()))
        return min(1.0, math.exp(log_probability))


def _usable_cores() -> int:
    # The cores this process may run on (a container's cpuset), not every core of the host.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class LlamaCppBackend:
    name = "llamacpp"
    # In-process: nothing to trip.
    circuit: CircuitBreaker | None = None

    def __init__(self, model_path: str | Path, *, threads: int, context_tokens: int) -> None:
        """Load the GGUF at ``model_path``; ``threads`` 0 means all cores but one (at least one), so
        the event loop answering known records keeps a core (bench-lanes: warm p99 under an LLM
        trickle 78 to 100 ms with both cores of 2 for llama.cpp, 36 ms with one)."""
        llama_cpp = import_llama_cpp()
        self._llama_cpp = llama_cpp
        path = Path(model_path)
        self.model = path.name
        n_threads = threads if threads > 0 else max(1, _usable_cores() - 1)
        try:
            # chat_format is left unset: llama-cpp-python then uses the chat template embedded in
            # the GGUF metadata (Qwen2.5 and SmolLM2 both carry theirs).
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=context_tokens,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LlmUnavailable(f"llama.cpp could not load {path}: {exc}; check llm.llamacpp.model") from exc
        self.chat_format: str | None = self._llm.chat_format
        if self.chat_format != "chat_template.default":
            log.warning("%s embeds no chat template; llama.cpp falls back to %s", self.model, self.chat_format)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")
        self._grammars: dict[tuple[str, ...], Any] = {}
        self._closed = False

    @classmethod
    def from_settings(cls, llamacpp: LlamaCppSettings, progress: bool = True) -> LlamaCppBackend:
        """From the ``llm.llamacpp`` settings; may assemble the model first."""
        path = resolve_gguf(llamacpp.model, llamacpp.cache_dir, progress)
        return cls(path, threads=llamacpp.threads, context_tokens=llamacpp.context_tokens)

    async def choose(self, prompt: Prompt) -> LlmAnswer:
        if self._closed:
            raise LlmUnavailable("the llama.cpp backend is closed")
        loop = asyncio.get_running_loop()
        try:
            text, confidence = await loop.run_in_executor(self._executor, self._infer, prompt)
        except LlmUnavailable:
            raise
        except RuntimeError as exc:
            # The executor refuses new work once aclose() has begun.
            raise LlmUnavailable(f"the llama.cpp backend is closing: {exc}") from exc
        return LlmAnswer(label=check_label(text, prompt.labels), confidence=confidence)

    def _infer(self, prompt: Prompt) -> tuple[str, float]:
        """One completion, on the inference thread."""
        if self._closed:  # queued before aclose(): do not spend seconds on an answer nobody uses
            raise LlmUnavailable("the llama.cpp backend is closed")
        grammar = self._grammar(prompt.labels)
        # A token is at least one byte, so this always fits the longest label.
        max_tokens = max(len(label.encode()) for label in prompt.labels) + 1
        recorder = _TokenLogits()
        try:
            result = self._llm.create_chat_completion(
                messages=list(prompt.messages),
                grammar=grammar,
                temperature=0.0,
                max_tokens=max_tokens,
                logits_processor=self._llama_cpp.LogitsProcessorList([recorder]),
            )
        except (ValueError, RuntimeError, OSError) as exc:
            # ValueError: the prompt exceeds the context window; RuntimeError: llama_decode failed.
            raise LlmUnavailable(f"llama.cpp inference failed ({self.model}): {exc}") from exc
        return str(result["choices"][0]["message"]["content"] or ""), recorder.probability()

    async def write(self, messages: Sequence[Mapping[str, str]], max_tokens: int) -> str:
        """Free text, greedy, at most ``max_tokens`` (bootstrap's written examples)."""
        if self._closed:
            raise LlmUnavailable("the llama.cpp backend is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._complete, list(messages), max_tokens)
        except RuntimeError as exc:
            raise LlmUnavailable(f"the llama.cpp backend is closing: {exc}") from exc

    def _complete(self, messages: list[Mapping[str, str]], max_tokens: int) -> str:
        try:
            result = self._llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=max_tokens)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LlmUnavailable(f"llama.cpp inference failed ({self.model}): {exc}") from exc
        return str(result["choices"][0]["message"]["content"] or "")

    def _grammar(self, labels: tuple[str, ...]) -> Any:
        grammar = self._grammars.get(labels)
        if grammar is None:
            if len(self._grammars) >= _GRAMMAR_CACHE_SIZE:
                self._grammars.clear()
            grammar = self._llama_cpp.LlamaGrammar.from_string(labels_grammar(labels), verbose=False)
            self._grammars[labels] = grammar
        return grammar

    async def aclose(self) -> None:
        """Finish the running inference, fail the queued ones, then free the model's memory."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self._llm.close()
