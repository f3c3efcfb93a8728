"""What stands before every route: the API key check, the checks that keep other web sites out (``Host`` and
cross-site writes), and the cap and deadline on a request's body.

A key comes as ``Authorization: Bearer KEY``. Keys are compared in constant time, against every configured key
(no early exit). ``GET`` requests may instead carry the key in the ``faceverify_key`` cookie, which the page
sets so that ``<img>`` (MJPEG) and ``EventSource`` (SSE) can authenticate; writes need the header. A read key may
do everything that changes nothing stored: reads, and posting images to identify or verify.

Without a key (a loopback server), any web page the user visits could send requests to it: so a request must
name this server in ``Host`` (its address, ``localhost`` or a name given with ``--allow-host``; DNS rebinding
sends another name, 421), and a request that may change something is refused when the browser says it comes
from another site (``Sec-Fetch-Site``, else ``Origin`` against ``Host``; 403): cross-site form posts need no
preflight. Keys and query strings are never logged: the access log holds method, path and status. uvicorn gets a deadline
for a request's headers (it has none: a client sending a byte now and then would hold its connection for ever).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from urllib.parse import unquote, urlsplit

from fastapi import Request

from .config import ServiceConfig, is_loopback
from .errors import ApiError

COOKIE = "faceverify_key"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_POSTS = frozenset({"/v1/identify", "/v1/verify"})
"""Posts that store nothing: a read key may send them."""


def _matches(token: bytes, keys: list[str]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key.encode())
    return found


def changes_nothing(method: str, path: str) -> bool:
    return method in READ_METHODS or (method == "POST" and path in READ_POSTS)


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
    if not full and not changes_nothing(request.method, request.url.path):
        raise ApiError(403, "this key may only read, identify and verify; changes need a full API key")


def host_name(value: str) -> str:
    """The name in a ``Host`` header or URL authority, without port, brackets or a final dot, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0].rstrip(".") if value.count(":") <= 1 else value


def foreign_request(config: ServiceConfig, method: str, path: str, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
    """(status, reason) when a request must be refused as coming from elsewhere (see the module), else None."""
    host = headers.get(b"host", b"").decode("latin-1")
    if not config.secured:
        name = host_name(host)
        if not (is_loopback(name) or name in config.allow_hosts or name == host_name(config.host)):
            shown = "".join(ch for ch in host[:80] if ch.isprintable())
            return 421, (f"this server does not answer for Host '{shown}' (without an API key it answers only "
                         "for its own address and localhost; start it with --allow-host NAME to add a name)")
    if method in READ_METHODS:  # reads (a cross-site page cannot read the answer); posts are checked, as writes
        return None
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
    if site in ("cross-site", "same-site"):
        return 403, "cross-site request refused (sent by another web site's page)"
    origin = headers.get(b"origin")
    if origin is not None and not site:
        text = origin.decode("latin-1")
        if text == "null" or urlsplit(text).netloc.lower() != host.lower():
            return 403, "cross-site request refused (its Origin is not this server)"
    return None


class RequestGuard:
    """ASGI middleware before the app: refuses requests from elsewhere (:func:`foreign_request`), answers 413 to a
    body over ``max_body`` bytes (by its Content-Length before anything is read, or as soon as a streamed body
    passes the limit) and 408 to a body that stalls ``read_timeout`` seconds, whatever the route would say."""

    def __init__(self, app, config: ServiceConfig):
        self.app = app
        self.config = config
        self.limit = config.max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        refused = foreign_request(self.config, scope["method"], scope["path"], headers)
        if refused is not None:
            return await _send_error(send, *refused)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _send_error(send, 400, "malformed Content-Length header")
            if declared > self.limit:
                return await _send_error(send, 413, self._message())
        seen = 0
        failed: tuple[int, str] | None = None
        started = body_done = False
        timeout = self.config.read_timeout

        async def guarded_receive():
            nonlocal seen, failed, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                failed = (408, f"request body stalled (nothing received for {timeout:g} s)")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    failed = (413, self._message())
                    return {"type": "http.disconnect"}  # the route stops reading; its answer is replaced below
            return message

        async def guarded_send(message):
            nonlocal started
            if failed is not None:
                if not started:
                    started = True
                    await _send_error(send, *failed)
                return
            started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if failed is None:
                raise
            if not started:
                await _send_error(send, *failed)

    def _message(self) -> str:
        return f"request body too large (the limit is {self.limit:,} bytes)"


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps(dict(error=message)).encode()
    await send(dict(type="http.response.start", status=status,
                    headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                             (b"connection", b"close")]))
    await send(dict(type="http.response.body", body=body))


# -- what the service adds to uvicorn's HTTP handling -------------------------------------------------------

ACCESS_LOG = "uvicorn.access"


def header_deadline_protocol(timeout: float) -> type:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    """uvicorn's HTTP protocol with a deadline: a connection that has not sent a whole request's headers
    ``timeout`` seconds after it opened (or after its last response, kept alive) is answered 408 and closed."""

    class DeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:  # noqa: ANN001
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            self.loop.call_later(timeout, self._late, self.cycle)

        def _late(self, cycle: object) -> None:
            if self.cycle is not cycle or self.transport.is_closing():
                return  # a request's headers came in time
            if cycle is None or cycle.response_complete:  # type: ignore[attr-defined]
                body = json.dumps(dict(error=f"request headers not received within {timeout:g} s")).encode()
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            self.transport.close()

    return DeadlineProtocol


class NoQueryStrings(logging.Filter):
    """Drops the query string from uvicorn's access log lines (``GET /v1/identify?… 200``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def hide_query_strings() -> None:
    """Install :class:`NoQueryStrings` on the access log (once; after uvicorn configured its logging)."""
    logger = logging.getLogger(ACCESS_LOG)
    if not any(isinstance(f, NoQueryStrings) for f in logger.filters):
        logger.addFilter(NoQueryStrings())
