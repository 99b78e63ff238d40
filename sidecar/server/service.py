"""The LogClassifier gRPC service: proto <-> pipeline, limits, status codes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from logclass import __version__
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.config.settings import Settings
from logclass.core.decision import ERROR_EMPTY, ERROR_TOO_LONG, ERROR_UTF8, Decision, LogRecord
from logclass.engine.engine import Engine
from logclass.engine.lanes import LaneFullError
from logclass.engine.metrics import Classify, Metrics
from logclass.tiers.embedding import EmbeddingTier
from logclass.tiers.llm.tier import LlmTier

_ERROR_CODES = {
    "": pb.ERROR_CODE_UNSPECIFIED,
    ERROR_EMPTY: pb.EMPTY_MESSAGE,
    ERROR_TOO_LONG: pb.MESSAGE_TOO_LONG,
    ERROR_UTF8: pb.INVALID_UTF8,
}


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


class LogClassifierService(pb_grpc.LogClassifierServicer):
    """Registered before the server starts (gRPC needs that); answers UNAVAILABLE until
    ``attach`` hands it the loaded engine."""

    def __init__(self, max_records: int, budgets: Budgets, metrics: Metrics) -> None:
        self.max_records = max_records
        self.budgets = budgets
        self.metrics = metrics
        self.engine: Engine | None = None
        self._classify: Classify | None = None
        self.model_info: Any = None

    def attach(self, engine: Engine, model_info: Any) -> None:
        self.engine, self.model_info = engine, model_info
        self._classify = self.metrics.counting(engine)

    async def _ready(self, context: grpc.aio.ServicerContext[Any, Any]) -> Classify:
        if self._classify is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are still loading; retry shortly")
        assert self._classify is not None
        return self._classify

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str) -> None:
        self.metrics.errors.labels(code.name.lower()).inc()
        await context.abort(code, message)

    async def _classify_request(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str, owner: object
    ) -> Any:
        started = time.perf_counter()
        classify = await self._ready(context)
        records: Sequence[Any] = request.records
        self.metrics.request_records.observe(len(records))
        if len(records) > self.max_records:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(records)} records in one request; the limit is {self.max_records}: split the batch",
            )
        budget = self.budgets.for_request(request, context.time_remaining())
        try:
            decisions = await classify([to_record(r) for r in records], budget, owner)
        except LaneFullError as exc:
            self.metrics.lane_rejected.labels(exc.lane).inc()
            await self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        response = pb.ClassifyResponse(
            results=[to_result(r.id, d) for r, d in zip(records, decisions, strict=True)],
            request_id=request.request_id,
        )
        self.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)
        return response

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._classify_request(request, context, "Classify", object())

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        # One owner per stream: the lanes take turns between streams, not between their messages.
        owner = object()
        async for request in request_iterator:
            yield await self._classify_request(request, context, "ClassifyStream", owner)

    async def GetModelInfo(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self._ready(context)
        return self.model_info


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
