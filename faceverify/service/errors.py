"""HTTP errors: every failure is ``{"error": "one line"}`` with the status that says what went wrong.

400 a bad or unreadable image (the CLI's one-line reasons, naming the file), 401 no or a wrong key, 403 a
read-only key on a write, 404 an unknown identity or stream, 409 a model mismatch, a name conflict or an empty
gallery, 413 a body or image too large, 422 a malformed request, a name the gallery refuses or a face below the
enrolment quality limits, 503 the model's queue is full. Nothing is stored on any of them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BadInputError, ConflictError, FaceverifyError, GalleryError, ImageTooLargeError, InvalidNameError,
    LowQualityError, UnknownIdentityError,
)

log = logging.getLogger("faceverify.service")


class ApiError(Exception):
    """An error answered with ``status`` and ``{"error": message}`` (plus ``extra`` fields)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: object):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra


def one_line(text: object, limit: int = 500) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    return JSONResponse(dict(error=one_line(message), **extra), status_code=status, headers=headers)


def status_of(exc: FaceverifyError) -> int:
    """The HTTP status of a faceverify error (the most specific class first)."""
    for cls, status in ((ImageTooLargeError, 413), (LowQualityError, 422), (BadInputError, 400), (UnknownIdentityError, 404),
                        (InvalidNameError, 422), (ConflictError, 409), (GalleryError, 500)):
        if isinstance(exc, cls):
            return status
    return 400  # a request the API refuses (an operating point out of range, no images given, ...)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}")
    return "malformed request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into a one-line JSON error."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(FaceverifyError)
    async def _faceverify(_: Request, exc: FaceverifyError) -> JSONResponse:
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if status == 400 and ("parsing the body" in detail or "multipart" in detail.lower()):
            # FastAPI's and Starlette's words for a body that is not the multipart or JSON it claims to be
            status, detail = 422, f"malformed request: {detail.rstrip('.').lower()}"
        return error_response(status, detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__,
                  one_line(exc, 200))
        return error_response(500, f"internal error: {type(exc).__name__}")
