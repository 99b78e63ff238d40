"""What an LLM backend is to the LLM tier: chat messages and a closed label set in, one label out.

Backends are async: the vLLM client awaits HTTP, the embedded llama.cpp backend awaits its own
inference thread. The engine runs them on its event loop; nothing here blocks a loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from logclass.core.circuit import CircuitBreaker
from logclass.errors import LogclassError


@dataclass(frozen=True, slots=True)
class Prompt:
    """One classification question, already rendered.

    ``messages`` are OpenAI-style chat messages (``{"role": ..., "content": ...}``); the log line
    sits inside the last user message between delimiters. ``labels`` is the closed answer set: a
    backend must constrain its output to exactly one of these strings.
    """

    messages: tuple[dict[str, str], ...]
    labels: tuple[str, ...]
    # The line ordered a label, which the guard took out and redacted: the answer is for a hostile
    # line, so it is neither learnt nor cached for the template it shares with honest lines.
    guarded: bool = False


@dataclass(frozen=True, slots=True)
class LlmAnswer:
    label: str
    # Probability of the chosen label from token log-probabilities; 1.0 when the backend gives none.
    confidence: float


class LlmUnavailable(LogclassError):
    """The backend cannot answer now (server down, circuit open, timed out, overloaded).

    The tier treats it as "no answer": the record gets the fallback label and the template is not
    cached, so a later record asks again.
    """


class LlmOutputError(LogclassError):
    """The backend answered something outside the label set: a backend bug or a misconfigured
    server (for example one that ignores structured outputs)."""


@runtime_checkable
class LlmBackend(Protocol):
    name: str
    # Model identifier, reported in model info and written to the teacher file.
    model: str

    @property
    def circuit(self) -> CircuitBreaker | None:
        """The breaker in front of a remote server, exported as a metric; None when in-process."""
        ...

    async def choose(self, prompt: Prompt) -> LlmAnswer: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LlmWriter(Protocol):
    """A backend that can also answer in free text (bounded by ``max_tokens``): bootstrap asks it
    to write a worked example for a label that has none. The tier never does: its answers are
    always constrained to the label set."""

    async def write(self, messages: Sequence[Mapping[str, str]], max_tokens: int) -> str: ...


def check_label(answer: str, labels: Sequence[str]) -> str:
    """The answer as one of ``labels``; raises ``LlmOutputError`` otherwise."""
    text = answer.strip().strip('"').strip()
    if text in labels:
        return text
    raise LlmOutputError(f"the LLM answered {answer[:80]!r}, which is not one of the configured labels")
