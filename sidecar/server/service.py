"""The LogClassifier gRPC service: proto <-> pipeline, limits, status codes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from sidecar import __version__
from sidecar.api.logclass.v1 import classifier_pb2 as pb
from sidecar.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from sidecar.decision import Decision, LogRecord
from sidecar.router import ERROR_EMPTY, ERROR_TOO_LONG, ERROR_UTF8, Router
from sidecar.server.batcher import MicroBatcher, QueueFullError
from sidecar.server.metrics import Metrics

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


class LogClassifierService(pb_grpc.LogClassifierServicer):
    """Registered before the server starts (gRPC needs that); answers UNAVAILABLE until
    ``attach`` hands it the loaded pipeline."""

    def __init__(self, max_records: int, metrics: Metrics) -> None:
        self.max_records = max_records
        self.metrics = metrics
        self.router: Router | None = None
        self.batcher: MicroBatcher | None = None
        self.model_info: Any = None

    def attach(self, router: Router, batcher: MicroBatcher, model_info: Any) -> None:
        self.router, self.batcher, self.model_info = router, batcher, model_info

    async def _ready(self, context: grpc.aio.ServicerContext[Any, Any]) -> MicroBatcher:
        if self.batcher is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are still loading; retry shortly")
        assert self.batcher is not None
        return self.batcher

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str) -> None:
        self.metrics.errors.labels(code.name.lower()).inc()
        await context.abort(code, message)

    async def _classify(self, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str) -> Any:
        started = time.perf_counter()
        batcher = await self._ready(context)
        records: Sequence[Any] = request.records
        self.metrics.request_records.observe(len(records))
        if len(records) > self.max_records:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(records)} records in one request; the limit is {self.max_records}: split the batch",
            )
        try:
            decisions = await batcher.classify([to_record(r) for r in records], context.time_remaining())
        except QueueFullError as exc:
            await self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except TimeoutError:
            await self._abort(
                context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the records were classified"
            )
        self.metrics.observe_decisions(decisions)
        response = pb.ClassifyResponse(
            results=[to_result(r.id, d) for r, d in zip(records, decisions, strict=True)],
            request_id=request.request_id,
        )
        self.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)
        return response

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._classify(request, context, "Classify")

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for request in request_iterator:
            yield await self._classify(request, context, "ClassifyStream")

    async def GetModelInfo(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self._ready(context)
        return self.model_info


def build_model_info(router: Router, cfg: dict[str, Any], bundle_files: dict[str, str], device: str) -> Any:
    llm = router.tier("llm")
    return pb.ModelInfo(
        labels=router.labels(),
        tiers=router.tiers_enabled,
        model_version=router.model_version,
        bundle_files_sha256=bundle_files,
        embedding_model="sentence-transformers/all-MiniLM-L6-v2" if "embedding" in router.tiers_enabled else "",
        embedding_device=device,
        llm_backend=getattr(getattr(llm, "backend", None), "name", "none"),
        llm_model=getattr(getattr(llm, "backend", None), "model", ""),
        fallback_label=router.fallback_label,
        max_records_per_request=cfg["server"]["max_records_per_request"],
        max_message_bytes=cfg["limits"]["max_message_bytes"],
        server_version=__version__,
    )
