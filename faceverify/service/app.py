"""The FastAPI application: one verifier and gallery shared by every request, the routes, the page, the key
check and the body cap; and :func:`serve`, which runs it under uvicorn."""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import lru_cache
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from ..api import FaceVerifier
from .errors import install as install_errors
from .config import ServiceConfig
from .engine import Engine, ServiceState
from .guard import RequestGuard, authorize, header_deadline_protocol, hide_query_strings
from .live import build_live_router
from .observers import UnknownFaces, Webhooks
from .routes import build_router
from .streams import StreamManager
from .thumbnails import Thumbnails
from .uploads import Decoder

OPEN_PATHS = frozenset({"/v1/health"})
"""Answered without a key: a monitor's health check (it tells the model, the gallery's name and counts)."""

DESCRIPTION = (
    "Face verification and identification against a gallery, with calibrated thresholds. JSON bodies are those "
    "of the CLI's `--json` output. Errors are `{\"error\": \"...\"}`. With a key configured, send "
    "`Authorization: Bearer KEY`."
)


def create_app(config: ServiceConfig, verifier: FaceVerifier | None = None) -> FastAPI:
    """The app for ``config``; ``verifier`` (default: the default model on CPU) is shared by all requests. The
    gallery is opened at once: a file enrolled with another model raises here, before anything listens."""
    verifier = verifier or FaceVerifier()
    engine = Engine(verifier, config.gallery, config.queue_size, config.batch_images)
    try:
        engine.open_now()
    except BaseException:
        engine.close()
        raise
    hooks = Webhooks(config.webhooks)
    unknown = UnknownFaces(config.keep_unknown)
    streams = StreamManager(verifier, config.gallery, hooks, unknown, config.max_streams)
    decoder = Decoder(config)
    state = ServiceState(config, verifier, engine, decoder, Thumbnails(config.gallery), streams, unknown, hooks)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        hide_query_strings()  # uvicorn has configured its loggers by now
        yield
        streams.close()
        hooks.close()
        decoder.close()
        engine.close()

    app = FastAPI(title="faceverify", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.service = state
    install_errors(app, str(config.gallery))

    async def auth(request: Request) -> None:
        if request.url.path not in OPEN_PATHS:
            authorize(config, request)

    app.include_router(build_router(state), dependencies=[Depends(auth)])
    app.include_router(build_live_router(state), dependencies=[Depends(auth)])
    install_page(app)
    app.add_middleware(RequestGuard, config=config)
    return app


def serve(config: ServiceConfig, verifier: FaceVerifier | None = None, log_level: str = "info") -> None:
    """Run the service until interrupted (refuses a non-loopback address without a key)."""
    import uvicorn

    config.check_listen()
    app = create_app(config, verifier)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, server_header=False,
                proxy_headers=False, timeout_graceful_shutdown=5, http=header_deadline_protocol(config.read_timeout))


# -- the web page at /: one HTML file with a little JavaScript, shipped in the package, nothing fetched from
# elsewhere (it works offline). The page holds no data; it asks the API, with the key the user types.

CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@lru_cache(maxsize=1)
def page_html() -> str:
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def install_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(), headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                                  "Referrer-Policy": "no-referrer"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)
