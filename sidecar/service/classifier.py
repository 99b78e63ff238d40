"""Classify and GetModelInfo as transport-free calls: a request message in, a response message
or an ``ApiError`` with its google.rpc code out."""

from __future__ import annotations

import enum
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from logclass import __version__
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.config.settings import ServerSettings, Settings
from logclass.core.decision import ERROR_EMPTY, ERROR_TOO_LONG, ERROR_UTF8, Decision, LogRecord
from logclass.engine.engine import Engine
from logclass.engine.lanes import LaneFullError
from logclass.engine.metrics import Classify, Metrics
from logclass.errors import LogclassError
from logclass.tiers.embedding import EmbeddingTier
from logclass.tiers.llm.tier import LlmTier

_ERROR_CODES = {
    "": pb.ERROR_CODE_UNSPECIFIED,
    ERROR_EMPTY: pb.EMPTY_MESSAGE,
    ERROR_TOO_LONG: pb.MESSAGE_TOO_LONG,
    ERROR_UTF8: pb.INVALID_UTF8,
}


class Code(enum.IntEnum):
    """The google.rpc.Code values the service answers with (gRPC status codes)."""

    OK = 0
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class ApiError(LogclassError):
    """A refused call: its code, and a message that says what to change."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def to_record(record: Any) -> LogRecord:
    message = record.message
    if not message and record.message_bytes:
        # Undecodable bytes survive as surrogates, which the router reports as INVALID_UTF8.
        message = bytes(record.message_bytes).decode("utf-8", "surrogateescape")
    return LogRecord(record.source.strip(), message.strip())


def to_result(record_id: str, decision: Decision) -> Any:
    return pb.ClassifyResult(
        id=record_id,
        label=decision.label,
        confidence=decision.confidence,
        tier=decision.tier,
        template_id=decision.template_id,
        model_version=decision.model_version,
        error=_ERROR_CODES.get(decision.error, pb.INTERNAL),
        detail=decision.error or decision.detail,
    )


@dataclass(frozen=True, slots=True)
class Budgets:
    """``server.inline_budget_ms`` and ``server.deadline_margin_ms``, in seconds."""

    inline_s: float
    margin_s: float

    def for_request(self, request: Any, time_remaining: float | None) -> float | None:
        """How long this request may wait for model answers; None: for all of them."""
        budget: float | None
        if request.wait_for_all:
            budget = None
        elif request.HasField("budget_ms"):
            budget = request.budget_ms / 1000.0
        else:
            budget = self.inline_s
        if time_remaining is not None:
            cap = max(0.0, time_remaining - self.margin_s)
            budget = cap if budget is None else min(budget, cap)
        return budget


class ClassifierService:
    """Made before the front ends listen; refuses calls with UNAVAILABLE until ``attach`` hands
    it the loaded engine, and again once ``drain`` has begun."""

    def __init__(self, server: ServerSettings, metrics: Metrics) -> None:
        self.max_records = server.max_records_per_request
        self.budgets = Budgets(server.inline_budget_ms / 1000.0, server.deadline_margin_ms / 1000.0)
        self.metrics = metrics
        self.engine: Engine | None = None
        self._classify: Classify | None = None
        self._model_info: Any = None
        self.draining = False

    def attach(self, engine: Engine, model_info: Any) -> None:
        self.engine, self._model_info = engine, model_info
        self._classify = self.metrics.counting(engine)

    def drain(self) -> None:
        self.draining = True

    @property
    def serving(self) -> bool:
        return self._classify is not None and not self.draining

    def classifier(self) -> Classify:
        """The counted engine, for a front end that batches records itself (a CSV upload)."""
        if self.draining:
            raise self.refuse(Code.UNAVAILABLE, "the sidecar is shutting down; retry (another replica takes it)")
        if self._classify is None:
            raise self.refuse(Code.UNAVAILABLE, "models are still loading; retry shortly")
        return self._classify

    def refuse(self, code: Code, message: str) -> ApiError:
        self.metrics.errors.labels(code.name.lower()).inc()
        return ApiError(code, message)

    async def classify(self, request: Any, *, method: str, owner: Hashable, time_remaining: float | None = None) -> Any:
        """A ClassifyResponse for ``request``; ``time_remaining``: the caller's deadline, if any."""
        started = time.perf_counter()
        classify = self.classifier()
        records: Sequence[Any] = request.records
        self.metrics.request_records.observe(len(records))
        if len(records) > self.max_records:
            raise self.refuse(
                Code.INVALID_ARGUMENT,
                f"{len(records)} records in one request; the limit is {self.max_records}: split the batch",
            )
        budget = self.budgets.for_request(request, time_remaining)
        try:
            decisions = await classify([to_record(r) for r in records], budget, owner)
        except LaneFullError as exc:
            self.metrics.lane_rejected.labels(exc.lane).inc()
            raise self.refuse(Code.RESOURCE_EXHAUSTED, str(exc)) from exc
        response = pb.ClassifyResponse(
            results=[to_result(r.id, d) for r, d in zip(records, decisions, strict=True)],
            request_id=request.request_id,
        )
        self.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)
        return response

    def model_info(self) -> Any:
        self.classifier()
        return self._model_info


def build_model_info(engine: Engine, settings: Settings, bundle_files: dict[str, str], device: str) -> Any:
    llm = engine.tier("llm")
    backend = llm.backend if isinstance(llm, LlmTier) else None
    embedding = engine.tier("embedding")
    return pb.ModelInfo(
        labels=engine.labels(),
        tiers=engine.tiers_enabled,
        model_version=engine.model_version,
        bundle_files_sha256=bundle_files,
        embedding_model=embedding.features if isinstance(embedding, EmbeddingTier) else "",
        embedding_device=device,
        llm_backend=backend.name if backend is not None else "none",
        llm_model=backend.model if backend is not None else "",
        fallback_label=engine.fallback_label,
        max_records_per_request=settings.server.max_records_per_request,
        max_message_bytes=settings.limits.max_message_bytes,
        server_version=__version__,
    )
