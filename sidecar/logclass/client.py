"""Python clients for the sidecar: sync and async, with deadlines, retries and batching.

with ClassifierClient("127.0.0.1:50051") as client:
    decisions = client.classify([LogRecord("billing", "User 12345 logged in.")])
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc

from logclass.api import error_codes
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.core.backoff import Backoff
from logclass.core.decision import Decision, LogRecord

# Worth retrying: the server is not there (yet) or asked us to back off.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# gRPC's default channel settings keep one HTTP/2 connection; these keep it alive across idle gaps.
_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 30_000), ("grpc.max_receive_message_length", 64 << 20)]


def to_decision(result: Any) -> Decision:
    error = error_codes.from_proto(result.error)
    return Decision(
        label=result.label,
        confidence=round(float(result.confidence), 4),
        tier=result.tier,
        template_id=result.template_id,
        model_version=result.model_version,
        detail="" if error else result.detail,
        error=error,
    )


def to_request(records: Sequence[LogRecord], budget_ms: int | None = None, wait_for_all: bool = False) -> Any:
    """``budget_ms`` None: the server's inline budget; ``wait_for_all``: every answer (batch jobs)."""
    out = []
    for record in records:
        try:
            record.message.encode("utf-8")
            out.append(pb.LogRecord(source=record.source, message=record.message))
        except UnicodeEncodeError:  # undecodable input bytes: send them raw, the server flags them
            raw = record.message.encode("utf-8", "surrogateescape")
            out.append(pb.LogRecord(source=record.source, message_bytes=raw))
    request = pb.ClassifyRequest(records=out, wait_for_all=wait_for_all)
    if budget_ms is not None:
        request.budget_ms = budget_ms
    return request


def chunked(records: Sequence[LogRecord], size: int) -> Iterator[Sequence[LogRecord]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


class ClassifierClient:
    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.1,
        batch_size: int = 1000,
        credentials: grpc.ChannelCredentials | None = None,
        budget_ms: int | None = None,
        wait_for_all: bool = False,
    ) -> None:
        self.timeout, self.retries, self.backoff, self.batch_size = timeout, retries, backoff, batch_size
        self.budget_ms, self.wait_for_all = budget_ms, wait_for_all
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.LogClassifierStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> ClassifierClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout, wait_for_ready=attempt > 0)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retries:
                    raise
                time.sleep(Backoff(self.backoff, jitter=True).delay(attempt))
        raise AssertionError("unreachable")

    def classify(self, records: Sequence[LogRecord]) -> list[Decision]:
        """Classifies any number of records, in requests of at most ``batch_size``."""
        out: list[Decision] = []
        for chunk in chunked(records, self.batch_size):
            response = self._call(self._stub.Classify, to_request(chunk, self.budget_ms, self.wait_for_all))
            out.extend(to_decision(r) for r in response.results)
        return out

    def queued(self) -> dict[str, int]:
        return {}  # the server's own metrics say

    def submit(self, records: Sequence[LogRecord]) -> concurrent.futures.Future[list[Decision]]:
        """``classify``, already done (one call at a time on this channel's blocking stub)."""
        future: concurrent.futures.Future[list[Decision]] = concurrent.futures.Future()
        try:
            future.set_result(self.classify(records))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def model_info(self) -> Any:
        return self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest())


class AsyncClassifierClient:
    def __init__(
        self, target: str, *, timeout: float = 30.0, retries: int = 4, backoff: float = 0.1, batch_size: int = 1000
    ) -> None:
        self.timeout, self.retries, self.backoff, self.batch_size = timeout, retries, backoff, batch_size
        self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.LogClassifierStub(self._channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> AsyncClassifierClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return await method(request, timeout=self.timeout, wait_for_ready=attempt > 0)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retries:
                    raise
                await asyncio.sleep(Backoff(self.backoff, jitter=True).delay(attempt))
        raise AssertionError("unreachable")

    async def classify(self, records: Sequence[LogRecord]) -> list[Decision]:
        chunks = list(chunked(records, self.batch_size))
        responses = await asyncio.gather(*(self._call(self._stub.Classify, to_request(c)) for c in chunks))
        return [to_decision(r) for response in responses for r in response.results]

    async def model_info(self) -> Any:
        return await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest())


def records_from(pairs: Iterable[tuple[str, str]]) -> list[LogRecord]:
    return [LogRecord(source, message) for source, message in pairs]
