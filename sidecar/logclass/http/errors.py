"""One error body for every failure: google.rpc.Status JSON with the HTTP status that gRPC-JSON
transcoding gives its code, so a caller handles gRPC and HTTP failures alike."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from logclass.http.schemas import Status
from logclass.jobs.rows import CsvInputError
from logclass.service.classifier import ApiError, Code

HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.INTERNAL: 500,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
}
# The other way, for errors the HTTP stack raises itself (no route, wrong verb, too large).
_CODE_OF_STATUS = {
    404: Code.NOT_FOUND,
    405: Code.UNIMPLEMENTED,
    413: Code.RESOURCE_EXHAUSTED,
    401: Code.UNAUTHENTICATED,
}


def documented(meanings: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses``: each HTTP status with the Status body and what it means there."""
    return {status: {"model": Status, "description": text} for status, text in meanings.items()}


def without_validation_422(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 with its own error model on every route that takes input; this
    API answers invalid input with 400 and a Status body (documented per route) instead."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return schema


def status_response(code: Code, message: str, http_status: int | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if code == Code.UNAUTHENTICATED else None
    return JSONResponse(
        {"code": int(code), "message": message, "details": []},
        status_code=http_status or HTTP_STATUS.get(code, 500),
        headers=headers,
    )


def _where(location: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in location]
    return ".".join(parts[1:] if parts and parts[0] in ("body", "query", "path") else parts) or "body"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return status_response(exc.code, exc.message)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(e) for e in exc.errors()[:20]]
    return status_response(Code.INVALID_ARGUMENT, "invalid request: " + "; ".join(problems))


def _problem(error: dict[str, Any]) -> str:
    location = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        reason = error.get("ctx", {}).get("error", "not JSON")
        return f"the body is not JSON ({reason} at character {location[-1] if location else '?'})"
    return f"{_where(location)}: {error.get('msg', 'invalid')}"


async def _csv(request: Request, exc: Exception) -> JSONResponse:
    return status_response(Code.INVALID_ARGUMENT, str(exc))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _CODE_OF_STATUS.get(exc.status_code, Code.INVALID_ARGUMENT if exc.status_code < 500 else Code.INTERNAL)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}; see /docs"
    elif exc.status_code == 405:
        message = f"{request.url.path} does not take {request.method}; see /docs"
    return status_response(code, message, exc.status_code)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(CsvInputError, _csv)
    app.add_exception_handler(HTTPException, _http)
