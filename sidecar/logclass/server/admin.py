"""The Admin gRPC servicer: the shared AdminService, with its codes as gRPC status."""

from __future__ import annotations

from typing import Any

import grpc

from logclass.api.logclass.v1 import admin_pb2 as admin_pb
from logclass.api.logclass.v1 import admin_pb2_grpc as admin_grpc
from logclass.core.learnt import Lesson
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
        corrections = [
            Correction(to_record(c.record), c.label.strip(), c.this_source_only) for c in request.corrections
        ]
        try:
            decisions = self.admin.feedback(corrections)
        except ApiError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
        results = [to_result(c.record.id, d) for c, d in zip(request.corrections, decisions, strict=True)]
        return admin_pb.FeedbackResponse(results=results)

    async def ListLessons(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        scope = request.scope if request.HasField("scope") else None
        try:
            lessons, total = self.admin.lessons(request.origin, scope, request.limit)
        except ApiError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
        return admin_pb.ListLessonsResponse(lessons=[_lesson(x) for x in lessons], total=total)

    async def DropLessons(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            dropped = self.admin.drop([(k.scope, k.template) for k in request.keys])
        except ApiError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
        return admin_pb.DropLessonsResponse(dropped=[_lesson(x) for x in dropped])


def _lesson(lesson: Lesson) -> Any:
    return admin_pb.Lesson(
        key=admin_pb.LessonKey(scope=lesson.scope, template=lesson.template),
        label=lesson.label,
        confidence=lesson.confidence,
        origin=lesson.origin,
        model=lesson.model,
        source=lesson.source,
        example=lesson.example,
    )
