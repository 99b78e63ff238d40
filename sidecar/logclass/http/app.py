"""The HTTP API as a FastAPI app: routes, their OpenAPI document, guards and error bodies."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, FastAPI, File, Query, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from starlette.concurrency import run_in_threadpool

from logclass import __version__
from logclass.config.settings import LimitsSettings, Settings
from logclass.engine.lanes import caller
from logclass.engine.metrics import Metrics
from logclass.http import csv_upload, errors, proto_json
from logclass.http.console import console_router
from logclass.http.guards import BodyLimit, ResponseCounter, SameOrigin, UploadGate, token_guard
from logclass.http.schemas import (
    CacheCounts,
    ClassifyRequestJson,
    ClassifyResponseJson,
    ErrorCount,
    Health,
    LaneLoad,
    ModelInfoJson,
    RecordCount,
    Stats,
)
from logclass.jobs.rows import ROW_LIMIT_FACTOR, check_encoding
from logclass.service.classifier import ClassifierService

# Paths that take a CSV upload rather than a JSON body (server.max_upload_bytes).
UPLOAD_PATHS = ("/classify", "/v1/report")
DOCS_ASSETS = "/docs/assets"
_ERRORS = errors.documented(
    {
        400: "INVALID_ARGUMENT: the request or file is malformed; the message says where",
        401: "UNAUTHENTICATED: server.auth is on and the bearer token is missing or wrong",
        403: "PERMISSION_DENIED: without server.auth, a cross-site request, or a Host that is not loopback",
        413: "the body is larger than server.max_request_bytes (JSON) or server.max_upload_bytes (CSV)",
        429: "RESOURCE_EXHAUSTED: a model lane is full; retry later, the message names the lane",
        503: "UNAVAILABLE: models are still loading, or the sidecar is draining",
    }
)


def _proto_json(message: Any) -> JSONResponse:
    printed = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return JSONResponse(_in_proto_order(printed, message.DESCRIPTOR))


def _in_proto_order(value: Any, descriptor: Any) -> Any:
    """Keys in .proto order (protobuf prints the set fields first, the defaults after them)."""
    if isinstance(value, list):
        return [_in_proto_order(v, descriptor) for v in value]
    if not isinstance(value, dict) or descriptor is None or descriptor.GetOptions().map_entry:
        return value
    return {
        f.json_name: _in_proto_order(value[f.json_name], f.message_type)
        for f in descriptor.fields
        if f.json_name in value
    }


def _swagger_assets() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def _v1_routes(service: ClassifierService, metrics: Metrics, started: float) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["LogClassifier"], responses=_ERRORS)

    @router.post(
        "/classify",
        response_model=ClassifyResponseJson,
        summary="Classify records (LogClassifier.Classify as proto3 JSON)",
    )
    async def classify(body: ClassifyRequestJson, request: Request) -> Response:
        """The gRPC `Classify` call with its messages in the proto3 JSON mapping (lowerCamelCase
        names, enum names, bytes as base64), as gRPC-JSON transcoding would carry it. Records
        the sidecar knows are answered at once; new ones wait up to `budgetMs` (default
        `server.inline_budget_ms`), or for every answer with `waitForAll`. A record that could
        not be classified carries its own `error`; the rest of the request is unaffected."""
        call = proto_json.call_of(body.model_dump())
        owner = caller("http", request.client.host if request.client else "")
        decisions = await service.classify(call, method="POST /v1/classify", owner=owner)
        # pydantic-core's serialiser: a third of the stdlib json's time on a 1000-record answer.
        return Response(pydantic_core.to_json(proto_json.response_of(call, decisions)), media_type="application/json")

    @router.get("/model", response_model=ModelInfoJson, summary="The model served (LogClassifier.GetModelInfo)")
    async def model() -> JSONResponse:
        """Labels, tiers, model version and bundle hashes, embedding and LLM backends, limits."""
        return _proto_json(service.model_info())

    @router.get("/stats", response_model=Stats, summary="Live counters for dashboards and the console")
    async def stats() -> Stats:
        snap = metrics.snapshot()
        return Stats(
            uptimeSeconds=time.monotonic() - started,
            records=[RecordCount(tier=t, label=lb, count=n) for (t, lb), n in sorted(snap.records.items())],
            cache=CacheCounts(**snap.cache),
            lanes=[LaneLoad(lane=k, queued=q, running=r) for k, (q, r) in sorted(snap.lanes.items())],
            inflightTemplates=snap.inflight,
            errors=[ErrorCount(kind=k, count=n) for k, n in sorted(snap.errors.items())],
        )

    return router


def _csv_routes(service: ClassifierService, limits: LimitsSettings) -> APIRouter:
    router = APIRouter(tags=["CSV"], responses=_ERRORS)

    @router.post(
        "/classify",
        summary="Classify a CSV file",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/csv": {}}, "description": "the CSV with the classification columns"}},
    )
    async def classify_csv(
        request: Request,
        file: Annotated[UploadFile, File(description="CSV with `source` and `log_message` columns; others are kept")],
        template_id: Annotated[bool, Query(description="also write a `template_id` column")] = False,
        encoding: Annotated[str, Query(description="the file's text encoding")] = "utf-8",
    ) -> StreamingResponse:
        """The rows of the upload with `target_label`, `tier`, `confidence` and `error` added, as
        `logclass classify` writes them: every answer is waited for, malformed rows are kept
        and flagged `malformed_row`, undecodable bytes come back as they went in. The file is
        checked whole first, so a bad one gets a 400 naming the line and a 200 is complete."""
        name = file.filename or "upload"
        codec = check_encoding(encoding)
        service.active_engine()  # UNAVAILABLE while loading or draining
        row_limit = ROW_LIMIT_FACTOR * limits.max_message_bytes
        layout, rows = await run_in_threadpool(
            csv_upload.inspect_upload, file.file, name, codec, template_id, row_limit
        )
        owner = caller("http", request.client.host if request.client else "")
        body = csv_upload.classified_csv(file.file, name, codec, layout, service.runtime, owner, row_limit)
        stem = Path(name).stem or "logs"
        headers = {
            "Content-Disposition": f'attachment; filename="{_safe(stem)}.classified.csv"',
            "X-Logclass-Rows": str(rows),
        }
        return StreamingResponse(body, media_type="text/csv; charset=utf-8", headers=headers)

    return router


def _safe(stem: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:100]


def _health_routes(service: ClassifierService) -> APIRouter:
    router = APIRouter(tags=["Health"])

    def status() -> Health:
        return Health(status="SERVING" if service.serving else "NOT_SERVING")

    @router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
    async def healthz() -> Health:
        """Always 200 while the process runs; `status` is gRPC health's for the server."""
        return status()

    @router.get(
        "/readyz",
        response_model=Health,
        summary="Readiness: models loaded and not draining",
        responses={503: {"model": Health, "description": "loading models, or draining"}},
    )
    async def readyz() -> JSONResponse:
        """200 once gRPC health says SERVING; 503 while the models load and once draining starts."""
        current = status()
        return JSONResponse(current.model_dump(), status_code=200 if current.status == "SERVING" else 503)

    return router


def _docs_routes(app: FastAPI) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    assets = _swagger_assets()

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        # Every asset from this sidecar: air-gapped clusters have no CDN. No online validator badge.
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="logclass API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True},
        )

    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    return router


def build_app(settings: Settings, service: ClassifierService, token: str | None) -> FastAPI:
    metrics = service.metrics
    server = settings.server
    app = FastAPI(
        title="logclass",
        version=__version__,
        summary="Inline log classification: regex, embeddings and an LLM fallback behind one cached router.",
        description=(
            "The LogClassifier gRPC service as proto3 JSON (`/v1/...`), CSV uploads (`/classify`), "
            "health, and the web console at `/`. Errors are google.rpc.Status JSON: `{code, message, details}`."
        ),
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    guarded = [token_guard(token)] if token else []
    started = time.monotonic()
    app.include_router(_v1_routes(service, metrics, started), dependencies=guarded)
    app.include_router(_csv_routes(service, settings.limits), dependencies=guarded)
    app.include_router(_health_routes(service))
    app.include_router(_docs_routes(app))
    app.include_router(console_router(settings, api_dependencies=guarded))

    def limit_for(path: str) -> tuple[int, str]:
        if path in UPLOAD_PATHS:
            return server.max_upload_bytes, "server.max_upload_bytes"
        return server.max_request_bytes, "server.max_request_bytes"

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.without_validation_422(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit_for=limit_for)
    app.add_middleware(UploadGate, paths=UPLOAD_PATHS, limit=server.max_concurrent_uploads)
    if not token:
        listen_host = (server.http_listen or "").rpartition(":")[0]
        app.add_middleware(SameOrigin, listen_host=listen_host)
    app.add_middleware(
        ResponseCounter, registry=metrics.registry, routes=lambda: {getattr(r, "path", "") for r in app.routes}
    )
    return app
