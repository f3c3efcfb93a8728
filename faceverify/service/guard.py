"""What stands before every route: the API key check and the cap on a request body's size.

A key comes as ``Authorization: Bearer KEY``. Keys are compared in constant time, against every configured key
(no early exit). ``GET`` requests may instead carry the key in the ``faceverify_key`` cookie, which the page
sets so that ``<img>`` (MJPEG) and ``EventSource`` (SSE) can authenticate; writes need the header, so a forged
cross-site form can never write. Keys are never logged: the access log holds only method, path and status.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import unquote

from fastapi import Request

from .config import ServiceConfig
from .errors import ApiError

COOKIE = "faceverify_key"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _matches(token: bytes, keys: list[str]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key.encode())
    return found


def authorize(config: ServiceConfig, request: Request) -> None:
    """Raise ApiError 401 without a valid key, 403 for a read-only key on a write; nothing when none is set."""
    if not config.secured:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if header and scheme.lower() != "bearer":
        raise ApiError(401, "the Authorization header must be 'Bearer KEY'", {"WWW-Authenticate": "Bearer"})
    token = token.strip()
    if not token and request.method in READ_METHODS:
        token = unquote(request.cookies.get(COOKIE, ""))
    if not token:
        raise ApiError(401, "an API key is needed (Authorization: Bearer KEY)", {"WWW-Authenticate": "Bearer"})
    raw = token.encode("utf-8", "replace")
    full = _matches(raw, config.api_keys)
    read = _matches(raw, config.read_keys)
    if not (full or read):
        raise ApiError(401, "wrong API key", {"WWW-Authenticate": "Bearer"})
    if not full and request.method not in READ_METHODS:
        raise ApiError(403, "this key may only read (GET); writes need a full API key")


class BodyLimit:
    """ASGI middleware: a request whose body is over ``limit`` bytes is answered 413 (by its Content-Length
    before anything is read, or as soon as a streamed body passes the limit), whatever the route would say."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _send_error(send, 400, "malformed Content-Length header")
            if declared > self.limit:
                return await _send_error(send, 413, self._message())
        seen = 0
        over = False
        started = False

        async def counted_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}  # the route stops reading; its answer is replaced below
            return message

        async def guarded_send(message):
            nonlocal started
            if over:
                if not started:
                    started = True
                    await _send_error(send, 413, self._message())
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not started:
                await _send_error(send, 413, self._message())

    def _message(self) -> str:
        return f"request body too large (the limit is {self.limit:,} bytes)"


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps(dict(error=message)).encode()
    await send(dict(type="http.response.start", status=status,
                    headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                             (b"connection", b"close")]))
    await send(dict(type="http.response.body", body=body))
