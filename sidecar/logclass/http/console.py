"""The web console: one static page (package data in ``console/``) over the HTTP API, and
POST /v1/report, the charts and cards of `logclass report` as JSON for that page."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from logclass.config.settings import Settings
from logclass.errors import LogclassError
from logclass.http import HttpServeError
from logclass.http.errors import documented, status_response
from logclass.jobs.report import ReportContent, ReportDependencyError, ReportOptions, report_content
from logclass.service.classifier import Code

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page runs only its own script and style, talks only to this server, and shows charts as
# data: URIs and downloads as blob: URLs. No inline script can run, so a log line that slips
# into markup still cannot execute.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The files are not fingerprinted: the browser revalidates each load and gets a 304 by ETag.
CACHE_CONTROL = "no-cache"
# Drawing is CPU-bound and the classifier shares the process: at most this many reports at a
# time, later ones wait their turn instead of taking every core.
REPORT_WORKERS = 2
MAX_NAME_CHARS = 100
REPORT_ERRORS = documented(
    {
        400: "INVALID_ARGUMENT: not a classified CSV; the message says what is missing",
        401: "UNAUTHENTICATED: server.auth is on and the bearer token is missing or wrong",
        413: "the file is larger than server.max_upload_bytes",
        501: "UNIMPLEMENTED: matplotlib (the report extra) is not installed on the server",
    }
)
UPLOAD_CHUNK = 1 << 20


class UploadError(LogclassError):
    """The upload is not a classified CSV; the message says what is missing."""


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


class ReportCard(BaseModel):
    value: str = Field(description="the figure, formatted, e.g. '1,204' or '3.2%'")
    label: str = Field(description="what the figure counts, e.g. 'reached the LLM'")


class ReportChart(BaseModel):
    name: str = Field(description="stable id: labels, labels_by_source, tiers, confidence, ...")
    title: str
    alt: str = Field(description="the chart's content as text, for screen readers")
    png: str = Field(description="the chart as a PNG, base64")


class Report(BaseModel):
    rows: int = Field(description="records counted (rows of the wrong width are left out)")
    cards: list[ReportCard]
    charts: list[ReportChart]


def load_assets() -> dict[str, Asset]:
    """The console's files by name, read once from package data."""
    folder = resources.files("logclass.http") / "console"
    out = {}
    for entry in folder.iterdir():
        content_type = CONTENT_TYPES.get(Path(entry.name).suffix)
        if content_type is None or not entry.is_file():
            continue
        body = entry.read_bytes()
        out[entry.name] = Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    if "index.html" not in out:
        raise HttpServeError(f"the console's files are missing from {folder}: reinstall logclass")
    return out


def _serve(asset: Asset, request: Request) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": CACHE_CONTROL, **SECURITY_HEADERS}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def report_json(content: ReportContent) -> Report:
    return Report(
        rows=content.rows,
        cards=[ReportCard(value=card.value, label=card.caption) for card in content.cards],
        charts=[
            ReportChart(name=c.name, title=c.title, alt=c.alt, png=base64.b64encode(c.png).decode("ascii"))
            for c in content.charts.values()
        ],
    )


def _upload_name(upload: UploadFile) -> str:
    name = (upload.filename or "").strip()[:MAX_NAME_CHARS]
    return f"the uploaded file {name!r}" if name else "the uploaded file"


def _report_of_upload(source: BinaryIO, name: str, settings: Settings) -> Report:
    """In a worker thread: the upload copied to a file (the report reads a path, and a big
    upload is spooled to disk by Starlette anyway), then read and drawn."""
    with tempfile.TemporaryDirectory(prefix="logclass-report-") as tmp:
        path = Path(tmp) / "upload.csv"
        with path.open("wb") as out:
            shutil.copyfileobj(source, out, UPLOAD_CHUNK)
        try:
            content = report_content(path, settings, ReportOptions(progress=False))
        except ReportDependencyError:
            raise
        except LogclassError as exc:
            # The message names the temporary path; the caller knows the file by its own name.
            raise UploadError(str(exc).replace(str(path), name)) from exc
        return report_json(content)


def console_router(settings: Settings, api_dependencies: Sequence[Any] = ()) -> APIRouter:
    """The page and its files (open to all: they hold no data) and POST /v1/report, guarded by
    ``api_dependencies`` as the rest of the API is (the bearer token)."""
    assets = load_assets()
    workers = ThreadPoolExecutor(max_workers=REPORT_WORKERS, thread_name_prefix="report")
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        return _serve(assets["index.html"], request)

    @router.get("/console/{asset}", include_in_schema=False)
    async def console_file(asset: str, request: Request) -> Response:
        found = assets.get(asset)
        if found is None:
            return status_response(Code.NOT_FOUND, f"no console file {asset!r}; the console is at /")
        return _serve(found, request)

    @router.post(
        "/v1/report",
        response_model=Report,
        summary="Charts and cards of a classified CSV",
        description=(
            "The figures of `logclass report` for a CSV that POST /classify returned (input columns plus "
            "target_label, tier, confidence, error): record, label and source counts, LLM share, labels per "
            "source, tier shares and confidence histograms as PNG images (base64). A gold column named "
            "input_target_label adds accuracy, a confusion matrix and calibration. Send the file as "
            "multipart form field `file`."
        ),
        responses=REPORT_ERRORS,
        dependencies=list(api_dependencies),
        tags=["Report"],
    )
    async def report(
        file: Annotated[UploadFile | None, File(description="a classified CSV, UTF-8")] = None,
    ) -> Report | JSONResponse:
        if file is None:
            return status_response(
                Code.INVALID_ARGUMENT, "no file: send the classified CSV as multipart/form-data field `file`"
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(workers, _report_of_upload, file.file, _upload_name(file), settings)
        except ReportDependencyError as exc:
            return status_response(Code.UNIMPLEMENTED, str(exc))
        except UploadError as exc:
            return status_response(Code.INVALID_ARGUMENT, str(exc))

    return router
