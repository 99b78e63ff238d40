"""LLM backend for vLLM or any OpenAI-compatible server: POST {url}/chat/completions.

The answer is constrained server-side to the label set, so a log line that says "reply HACKED"
can only ever produce a configured label: ``constrain: choice`` sends vLLM's
``structured_outputs: {"choice": labels}`` (vLLM >= 0.12; the older ``guided_choice`` is ignored
without an error by current servers), ``constrain: json_schema`` sends an OpenAI
``response_format`` with an enum, for other servers. The answer is still checked against the
labels: a server that ignores the constraint gives ``LlmOutputError``, not a wrong label.

Failure handling, per ``choose``:

- connect errors, timeouts, HTTP 5xx and 429 are retried ``retries`` times with exponential
  backoff and jitter; if all attempts fail the call raises ``LlmUnavailable`` and counts one
  failure on the circuit breaker;
- HTTP 401/403/404 (wrong key, wrong URL or model) are not retried and count as failures too:
  every call would fail the same way, so the circuit opens and stops the hammering;
- after ``circuit.failures`` consecutive failures the circuit opens: calls raise
  ``LlmUnavailable`` at once, without touching the network, for ``circuit.cooldown_s``; then
  one probe goes through and its success closes the circuit;
- an answer outside the label set raises ``LlmOutputError`` and counts as a *success* on the
  circuit: the server is up and answering fast, so failing fast would protect nothing; it is a
  configuration problem (no constraint support, wrong ``constrain`` mode) that the tier reports.
  It is not retried: at temperature 0 the same question gets the same answer.
- other HTTP 4xx (e.g. a prompt longer than the server's context) raise ``LlmUnavailable`` for
  that call only and do not count against the circuit.

Confidence is exp(sum of the log-probabilities of the tokens that spell the label), from the
server's ``logprobs``; 1.0 when the server returns none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from logclass.config import ConfigError
from logclass.config.settings import LlmServerSettings, LlmSettings
from logclass.core.backoff import Backoff
from logclass.core.circuit import CircuitBreaker, State
from logclass.secrets import SecretError, read_secret
from logclass.tiers.llm.backend import LlmAnswer, LlmOutputError, LlmUnavailable, Prompt, check_label

log = logging.getLogger("logclass.llm")

# Reported as the model before the server has been asked which model it serves.
AUTO_MODEL = "(auto)"
# Tokens are at least one character, so a label needs at most len(label) tokens; the margin covers
# the end-of-sequence token and, in JSON mode, the braces, key and quotes.
_CHOICE_TOKEN_MARGIN = 8
_JSON_TOKEN_MARGIN = 32


@dataclass(frozen=True, slots=True)
class ServerSettings:
    url: str
    model: str | None
    # Out of repr: settings get logged, the key must not be.
    api_key: str | None = field(repr=False)
    request_timeout_s: float
    retries: int
    backoff_s: float
    circuit_failures: int
    circuit_cooldown_s: float
    constrain: Literal["choice", "json_schema"]
    max_concurrency: int

    @classmethod
    def from_settings(cls, llm: LlmSettings) -> ServerSettings:
        """From the ``llm`` section (``llm.server`` and ``llm.max_concurrency``): seconds, and the key read."""
        server = llm.server
        if not server.url:
            raise ConfigError("llm.server.url is not set: give the server's API base URL, e.g. http://vllm:8000/v1")
        return cls(
            url=server.url.rstrip("/"),
            model=server.model or None,
            api_key=_api_key(server),
            request_timeout_s=server.request_timeout_ms / 1000,
            retries=server.retries,
            backoff_s=server.backoff_ms / 1000,
            circuit_failures=server.circuit.failures,
            circuit_cooldown_s=server.circuit.cooldown_s,
            constrain=server.constrain,
            max_concurrency=llm.max_concurrency,
        )


def _api_key(server: LlmServerSettings) -> str | None:
    """The bearer key: ``api_key`` itself, else the stripped contents of ``api_key_file``."""
    if server.api_key:
        return server.api_key
    path = server.api_key_file
    try:
        key: str | None = read_secret(None, path, "llm.server.api_key")
    except SecretError as exc:
        if exc.reason == "unreadable":
            raise ConfigError(
                f"llm.server.api_key_file {path}: cannot read it ({exc.strerror}); fix the path"
            ) from exc.__cause__
        raise ConfigError(f"llm.server.api_key_file {path} is empty: put the server's API key in it") from None
    return key


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not (network, timeout, 5xx, 429)."""


class _Rejected(Exception):
    """The server refused the request; ``outage`` when every request would be refused alike."""

    def __init__(self, message: str, outage: bool) -> None:
        super().__init__(message)
        self.outage = outage


class OpenAiHttpBackend:
    name = "vllm"

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.model = settings.model or AUTO_MODEL
        self._model_known = settings.model is not None
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        limits = httpx.Limits(
            max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency
        )
        self._client = httpx.AsyncClient(
            base_url=settings.url + "/",
            headers=headers,
            timeout=settings.request_timeout_s,
            limits=limits,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._discovery = asyncio.Lock()
        self.circuit = CircuitBreaker(settings.circuit_failures, settings.circuit_cooldown_s)
        # HTTP attempts actually sent, retries included: an open circuit must not move it.
        self.attempts = 0
        self._last_failure = ""

    @classmethod
    def from_settings(cls, llm: LlmSettings) -> OpenAiHttpBackend:
        """From the ``llm`` section (``llm.server`` and ``llm.max_concurrency``)."""
        return cls(ServerSettings.from_settings(llm))

    def __repr__(self) -> str:
        # Never shows the key.
        return f"OpenAiHttpBackend(url={self.settings.url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def choose(self, prompt: Prompt) -> LlmAnswer:
        if not self.circuit.allow():
            raise self._circuit_open()
        try:
            async with self._slots:
                # The circuit may have opened while this call queued for a slot.
                if self.circuit.state is State.OPEN:
                    raise self._circuit_open()
                await self._discover_model()
                body = await self._call("POST", "chat/completions", self._body(prompt))
        except _Retryable as exc:
            self._failed(str(exc))
            raise LlmUnavailable(str(exc)) from None
        except _Rejected as exc:
            if exc.outage:
                self._failed(str(exc))
            else:
                self.circuit.record_success()
            raise LlmUnavailable(str(exc)) from None
        # Reached the server and got an answer: whatever it says, the server is up.
        self.circuit.record_success()
        return _answer_from_body(body, prompt.labels, json_mode=self.settings.constrain == "json_schema")

    async def write(self, messages: Sequence[Mapping[str, str]], max_tokens: int) -> str:
        """Free text, greedy, at most ``max_tokens`` (bootstrap's written examples)."""
        if not self.circuit.allow():
            raise self._circuit_open()
        payload = {"model": self.model, "messages": list(messages), "temperature": 0, "max_tokens": max_tokens}
        try:
            async with self._slots:
                await self._discover_model()
                payload["model"] = self.model
                body = await self._call("POST", "chat/completions", payload)
        except _Retryable as exc:
            self._failed(str(exc))
            raise LlmUnavailable(str(exc)) from None
        except _Rejected as exc:
            if exc.outage:
                self._failed(str(exc))
            else:
                self.circuit.record_success()
            raise LlmUnavailable(str(exc)) from None
        self.circuit.record_success()
        return _written_text(body)

    def _circuit_open(self) -> LlmUnavailable:
        return LlmUnavailable(
            f"LLM server {self.settings.url} is skipped for {self.circuit.retry_in():.1f}s more: the circuit "
            f"opened after {self.circuit.failures} consecutive failures (last: {self._last_failure})"
        )

    def _failed(self, reason: str) -> None:
        self._last_failure = reason
        if self.circuit.record_failure():
            log.warning(
                "LLM server %s: circuit open for %.0fs after repeated failures; last: %s",
                self.settings.url,
                self.circuit.cooldown_s,
                reason,
            )

    def _body(self, prompt: Prompt) -> dict[str, Any]:
        longest = max(len(label) for label in prompt.labels)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(prompt.messages),
            "temperature": 0,
            "logprobs": True,
        }
        if self.settings.constrain == "choice":
            body["max_tokens"] = longest + _CHOICE_TOKEN_MARGIN
            body["structured_outputs"] = {"choice": list(prompt.labels)}
        else:
            body["max_tokens"] = longest + _JSON_TOKEN_MARGIN
            schema = {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": list(prompt.labels)}},
                "required": ["label"],
                "additionalProperties": False,
            }
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "label", "schema": schema}}
        return body

    async def _discover_model(self) -> None:
        """Ask the server once which model it serves, when ``llm.server.model`` is null."""
        if self._model_known:
            return
        async with self._discovery:
            if self._model_known:
                return
            listing = await self._call("GET", "models", None)
            models = [m.get("id") for m in listing.get("data") or [] if isinstance(m, dict)]
            if not models or not isinstance(models[0], str):
                raise _Rejected(
                    f"the LLM server at {self.settings.url} lists no models at /models: set llm.server.model",
                    outage=True,
                )
            self.model = models[0]
            self._model_known = True
            log.info("LLM server %s serves %s", self.settings.url, self.model)

    async def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        """One request with retries; the parsed JSON body of a 2xx answer."""
        attempt = 0
        while True:
            try:
                return await self._attempt(method, path, payload)
            except _Retryable as exc:
                if attempt >= self.settings.retries:
                    raise _Retryable(f"{exc} (after {attempt + 1} attempts)") from None
                await asyncio.sleep(Backoff(self.settings.backoff_s, jitter=True).delay(attempt))
                attempt += 1

    async def _attempt(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        url = f"{self.settings.url}/{path}"
        timeout = self.settings.request_timeout_s
        self.attempts += 1
        started = time.monotonic()
        try:
            # httpx's timeout bounds each phase; wait_for bounds the whole exchange, so a server
            # that trickles bytes cannot hold a call past request_timeout_ms.
            response = await asyncio.wait_for(self._client.request(method, path, json=payload), timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise _Retryable(
                f"the LLM server at {url} did not answer within {timeout * 1000:.0f} ms: "
                "is it overloaded? raise llm.server.request_timeout_ms or add capacity"
            ) from None
        except httpx.TransportError as exc:
            raise _Retryable(
                f"cannot reach the LLM server at {url} ({type(exc).__name__}: {exc}): "
                "is it running? check llm.server.url"
            ) from None
        log.debug("%s %s: %d in %.0f ms", method, url, response.status_code, (time.monotonic() - started) * 1000)
        return _json_or_raise(response, url)


def _json_or_raise(response: httpx.Response, url: str) -> dict[str, Any]:
    status = response.status_code
    detail = _error_detail(response)
    if status == 429 or status >= 500:
        raise _Retryable(f"the LLM server at {url} answered HTTP {status} ({detail}): it is overloaded or failing")
    if status in (401, 403):
        raise _Rejected(
            f"the LLM server at {url} refused the API key (HTTP {status}): "
            "set llm.server.api_key or llm.server.api_key_file to the server's key",
            outage=True,
        )
    if status == 404:
        raise _Rejected(
            f"the LLM server answered HTTP 404 for {url} ({detail}): llm.server.url must be the API base, "
            "usually ending in /v1, and llm.server.model a model it serves (null: the first it lists)",
            outage=True,
        )
    if status >= 400:
        raise _Rejected(f"the LLM server at {url} rejected the request: HTTP {status} ({detail})", outage=False)
    try:
        body = response.json()
    except ValueError:
        raise _Retryable(f"the LLM server at {url} answered HTTP {status} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise _Retryable(f"the LLM server at {url} answered a JSON {type(body).__name__}, not an object")
    return body


def _error_detail(response: httpx.Response) -> str:
    """The server's error message, short; never the request (it may hold log data)."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no detail"
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:200]


def _answer_parts(body: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The answer text and its per-token logprob entries (empty when the server sent none)."""
    try:
        choice = body["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LlmOutputError(f"the LLM server's answer has no choices[0].message.content: {str(body)[:200]}") from None
    if not isinstance(content, str):
        raise LlmOutputError(f"the LLM server answered no text (content {content!r})")
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    return content, tokens if isinstance(tokens, list) else []


def _written_text(body: Mapping[str, Any]) -> str:
    choices = body.get("choices")
    message = (
        choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    )
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise LlmOutputError("the LLM server's answer has no choices[0].message.content string")
    return content


def _json_label(content: str) -> str:
    try:
        parsed = json.loads(content)
    except ValueError:
        raise LlmOutputError(
            f"the LLM answered {content[:80]!r}, not JSON: does the server support response_format "
            "json_schema? for vLLM set llm.server.constrain: choice"
        ) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("label"), str):
        raise LlmOutputError(f"the LLM answered {content[:80]!r}, which has no string 'label'")
    return str(parsed["label"])


def _label_span(text: str, label: str, json_mode: bool) -> tuple[int, int] | None:
    """Where ``label`` is spelt in ``text``: inside the JSON string value, or the whole answer."""
    if json_mode:
        match = re.search(r'"label"\s*:\s*"', text)
        if match is None:
            return None
        start = match.end()
        end = start + len(json.dumps(label)) - 2
        return (start, end) if text.startswith(json.dumps(label)[1:-1], start) else None
    start = text.find(label)
    return (start, start + len(label)) if start >= 0 else None


def confidence(tokens: Sequence[Any], content: str, label: str, json_mode: bool) -> float:
    """exp(sum of logprobs of the tokens spelling ``label``), in [0, 1]; 1.0 without logprobs.

    Token texts are laid end to end to find which tokens overlap the label. If they do not spell
    the answer (byte-level tokens the server could not decode), every token counts instead.
    """
    entries = [(str(t.get("token", "")), t.get("logprob")) for t in tokens if isinstance(t, dict)]
    values = [lp for _, lp in entries if isinstance(lp, (int, float)) and math.isfinite(lp)]
    if not values:
        return 1.0
    text = "".join(token for token, _ in entries)
    span = _label_span(text, label, json_mode) if text.startswith(content) else None
    if span is not None:
        total, offset = 0.0, 0
        for token, logprob in entries:
            end = offset + len(token)
            if end > span[0] and offset < span[1] and isinstance(logprob, (int, float)) and math.isfinite(logprob):
                total += logprob
            offset = end
    else:
        total = sum(values)
    return min(1.0, max(0.0, math.exp(total)))


def _answer_from_body(body: Mapping[str, Any], labels: Sequence[str], json_mode: bool) -> LlmAnswer:
    content, tokens = _answer_parts(body)
    raw = _json_label(content) if json_mode else content
    label = check_label(raw, labels)
    return LlmAnswer(label, confidence(tokens, content, label, json_mode))
