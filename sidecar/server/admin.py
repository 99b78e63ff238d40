"""The Admin gRPC servicer: the shared AdminService, with its codes as gRPC status."""

from __future__ import annotations

from typing import Any

import grpc

from logclass.api.logclass.v1 import admin_pb2 as admin_pb
from logclass.api.logclass.v1 import admin_pb2_grpc as admin_grpc
from logclass.service.admin import AdminService, Correction
from logclass.service.classifier import ApiError, to_record, to_result


class AdminServicer(admin_grpc.AdminServicer):
    def __init__(self, admin: AdminService) -> None:
        self.admin = admin

    async def Reload(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            outcome = await self.admin.reload(list(request.parts))
        except ApiError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
        return admin_pb.ReloadResponse(
            changed=list(outcome.changed), model_version=outcome.model_version, rules_sha256=outcome.rules_sha256
        )

    async def Feedback(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        corrections = [Correction(to_record(c.record), c.label.strip()) for c in request.corrections]
        try:
            decisions = self.admin.feedback(corrections)
        except ApiError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
        results = [to_result(c.record.id, d) for c, d in zip(request.corrections, decisions, strict=True)]
        return admin_pb.FeedbackResponse(results=results)
