"""The LogClassifier gRPC servicer: the shared ClassifierService, with its codes as gRPC status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.engine.lanes import caller
from logclass.service.classifier import ApiError, ClassifierService, ClassifyCall, to_response


class LogClassifierServicer(pb_grpc.LogClassifierServicer):
    def __init__(self, service: ClassifierService) -> None:
        self.service = service

    async def _classify(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str, owner: object
    ) -> Any:
        call = ClassifyCall.of_proto(request)
        try:
            decisions = await self.service.classify(
                call, method=method, owner=owner, time_remaining=context.time_remaining()
            )
            return to_response(call, decisions)
        except ApiError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._classify(request, context, "Classify", caller("grpc", context.peer()))

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        # One owner per caller: the lanes take turns between clients, not between their streams.
        owner = caller("grpc", context.peer())
        async for request in request_iterator:
            yield await self._classify(request, context, "ClassifyStream", owner)

    async def GetModelInfo(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return self.service.model_info()
        except ApiError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
