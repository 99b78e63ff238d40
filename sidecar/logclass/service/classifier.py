"""Classify and GetModelInfo as transport-free calls: a request message in, a response message
or an ``ApiError`` with its google.rpc code out."""

from __future__ import annotations

import enum
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from logclass import __version__
from logclass.api import error_codes
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.config.settings import Settings
from logclass.core.bundle import ModelBundle
from logclass.core.decision import Decision, LogRecord
from logclass.engine.engine import Engine
from logclass.engine.lanes import LaneFullError
from logclass.engine.runtime import EngineUnavailable, Runtime
from logclass.errors import LogclassError
from logclass.tiers import registry


class Code(enum.IntEnum):
    """The google.rpc.Code values the service answers with (gRPC status codes)."""

    OK = 0
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
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


def error_code(decision: Decision) -> Any:
    """The record's ErrorCode; an error the contract has no code for is INTERNAL."""
    return error_codes.to_proto(decision.error)


def to_response(call: ClassifyCall, decisions: Sequence[Decision]) -> Any:
    results = [to_result(i, d) for i, d in zip(call.ids, decisions, strict=True)]
    return pb.ClassifyResponse(results=results, request_id=call.request_id)


def result_fields(record_id: str, decision: Decision) -> dict[str, Any]:
    """A ClassifyResult's fields by proto name: the one mapping from a decision, which the gRPC
    message and the HTTP JSON are both made from."""
    return {
        "id": record_id,
        "label": decision.label,
        "confidence": decision.confidence,
        "tier": decision.tier,
        "template_id": decision.template_id,
        "model_version": decision.model_version,
        "error": error_code(decision),
        "detail": decision.error or decision.detail,
    }


def to_result(record_id: str, decision: Decision) -> Any:
    return pb.ClassifyResult(**result_fields(record_id, decision))


@dataclass(frozen=True, slots=True)
class ClassifyCall:
    """A ClassifyRequest, whichever transport carried it: each front end parses its own wire
    format straight into this (protobuf's JSON conversion would cost HTTP more than the call)."""

    records: list[LogRecord]
    ids: list[str]
    request_id: str = ""
    budget_ms: int | None = None
    wait_for_all: bool = False

    @classmethod
    def of_proto(cls, request: Any) -> ClassifyCall:
        return cls(
            [to_record(r) for r in request.records],
            [r.id for r in request.records],
            request.request_id,
            request.budget_ms if request.HasField("budget_ms") else None,
            request.wait_for_all,
        )


@dataclass(frozen=True, slots=True)
class Budgets:
    """``server.inline_budget_ms``, ``server.deadline_margin_ms`` and ``server.max_wait_ms``, in seconds."""

    inline_s: float
    margin_s: float
    max_wait_s: float

    def for_request(self, call: ClassifyCall, time_remaining: float | None) -> float | None:
        """How long this call may wait for model answers. A call without a deadline (HTTP, or
        gRPC without one) waits ``max_wait_s`` at most, waitForAll included: otherwise a caller
        could hold its request, and its share of the lanes, for as long as the models take."""
        budget: float | None
        if call.wait_for_all:
            budget = None
        elif call.budget_ms is not None:
            budget = call.budget_ms / 1000.0
        else:
            budget = self.inline_s
        cap = self.max_wait_s if time_remaining is None else max(0.0, time_remaining - self.margin_s)
        return cap if budget is None else min(budget, cap)


class ClassifierService:
    """Classify and GetModelInfo on the process's runtime: refuses calls with UNAVAILABLE until
    the runtime has its engine, and again once it drains."""

    def __init__(self, runtime: Runtime) -> None:
        # Restart-only settings (config.live): read once.
        server = runtime.settings.server
        self.runtime = runtime
        self.max_records = server.max_records_per_request
        self.budgets = Budgets(
            server.inline_budget_ms / 1000.0, server.deadline_margin_ms / 1000.0, server.max_wait_ms / 1000.0
        )
        self.metrics = runtime.metrics

    @property
    def serving(self) -> bool:
        return self.runtime.serving

    def active_engine(self) -> Engine:
        """The engine serving now (a reload may swap it), for calls other than Classify."""
        try:
            return self.runtime.current()
        except EngineUnavailable as exc:
            raise self.refuse(Code.UNAVAILABLE, str(exc)) from exc

    def refuse(self, code: Code, message: str) -> ApiError:
        self.metrics.count_error(code.name.lower())
        return ApiError(code, message)

    async def classify(
        self, call: ClassifyCall, *, method: str, owner: Hashable, time_remaining: float | None = None
    ) -> list[Decision]:
        """One decision per record of ``call``, in order; ``time_remaining``: the caller's deadline."""
        started = time.perf_counter()
        self.active_engine()
        self.metrics.request_records.observe(len(call.records))
        if len(call.records) > self.max_records:
            raise self.refuse(
                Code.INVALID_ARGUMENT,
                f"{len(call.records)} records in one request; the limit is {self.max_records}: split the batch",
            )
        try:
            decisions = await self.runtime.classify(call.records, self.budgets.for_request(call, time_remaining), owner)
        except LaneFullError as exc:
            raise self.refuse(Code.RESOURCE_EXHAUSTED, str(exc)) from exc
        except EngineUnavailable as exc:
            raise self.refuse(Code.UNAVAILABLE, str(exc)) from exc
        self.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)
        return decisions

    def model_info(self) -> Any:
        """The model serving now, read from the runtime on each call (a reload may have swapped
        the engine or its rules' labels)."""
        engine = self.active_engine()
        return build_model_info(engine, self.runtime.settings, self.runtime.bundle)


def build_model_info(engine: Engine, settings: Settings, bundle: ModelBundle | None) -> Any:
    """ModelInfo of ``engine``: each registered tier gives its own fields (its backend, model
    and device, or their blanks when it is not running)."""
    return pb.ModelInfo(
        labels=engine.labels(),
        tiers=engine.tiers_enabled,
        model_version=engine.model_version,
        bundle_files_sha256=dict(bundle.manifest.files) if bundle is not None else {},
        fallback_label=engine.fallback_label,
        max_records_per_request=settings.server.max_records_per_request,
        max_message_bytes=settings.limits.max_message_bytes,
        max_source_bytes=settings.limits.max_source_bytes,
        server_version=__version__,
        **registry.model_info(engine.tiers),
    )
