"""HTTP errors: every failure is ``{"error": "one line"}`` with the status that says what went wrong.

400 a bad or unreadable image (the CLI's one-line reasons, naming the file) or a stream source that cannot be
opened, 401 no or a wrong key, 403 a read-only key on a change or a cross-site write, 404 an unknown identity or
stream, 408 a client too slow to send its request, 409 a model mismatch, a name conflict or an empty gallery,
413 a body or image too large, 421 a ``Host`` this server does not answer for, 422 a malformed request (fields,
parameters, an operating point the calibration cannot give), a name the gallery refuses or a face below the
enrolment quality limits, 503 the server is busy (retry), 504 a stream source that did not answer. Nothing is
stored on any of them. Messages never show where the gallery is (only its name).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BadInputError, ConflictError, FaceverifyError, GalleryError, ImageTooLargeError, InvalidNameError,
    LowQualityError, OperatingPointError, UnknownIdentityError,
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


def gallery_name(location: object) -> str:
    """What the service shows of its gallery: the file's name (not the folder it is in), or a database URL's
    scheme and database (not its host or options)."""
    text = str(location)
    if "://" in text:
        parts = urlsplit(text)
        return f"{parts.scheme}:///{parts.path.lstrip('/')}"
    return text.rstrip("/").rsplit("/", 1)[-1]


def status_of(exc: FaceverifyError) -> int:
    """The HTTP status of a faceverify error (the most specific class first)."""
    for cls, status in ((ImageTooLargeError, 413), (LowQualityError, 422), (BadInputError, 400), (UnknownIdentityError, 404),
                        (InvalidNameError, 422), (ConflictError, 409), (GalleryError, 500), (OperatingPointError, 422)):
        if isinstance(exc, cls):
            return status
    return 400  # a request the API refuses (an operating point out of range, no images given, ...)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}")
    return "malformed request: " + "; ".join(parts)


def install(app: FastAPI, private: str) -> None:
    """Register the handlers that turn every exception into a one-line JSON error; ``private`` (the gallery's
    location) is shown by its last part only."""
    shown = gallery_name(private)

    def hide(text: str) -> str:
        return text.replace(private, shown)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        extra = {k: [hide(str(v)) for v in vs] if isinstance(vs, list) else vs for k, vs in exc.extra.items()}
        return error_response(exc.status, hide(exc.message), exc.headers, **extra)

    @app.exception_handler(FaceverifyError)
    async def _faceverify(_: Request, exc: FaceverifyError) -> JSONResponse:
        return error_response(status_of(exc), hide(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if status == 400 and "exceeded maximum size" in detail:  # a multipart form field over Starlette's cap
            status, detail = 413, f"request refused: {detail.rstrip('.').lower()}"
        elif status == 400:  # FastAPI's and Starlette's words for a body that is not the form or JSON it claims
            status, detail = 422, f"malformed request: {detail.rstrip('.').lower()}"
        return error_response(status, detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__,
                  one_line(exc, 200))
        return error_response(500, f"internal error: {type(exc).__name__}")
