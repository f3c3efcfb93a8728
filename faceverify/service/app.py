"""The FastAPI application: one verifier and gallery shared by every request, the routes, the page, the key
check and the body cap; and :func:`serve`, which runs it under uvicorn."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request

from ..api import FaceVerifier
from .errors import install as install_errors
from .config import ServiceConfig
from .engine import Engine, ServiceState
from .guard import BodyLimit, authorize
from .live import build_live_router
from .observers import UnknownFaces, Webhooks
from .page import install_page
from .routes import build_router
from .streams import StreamManager
from .uploads import Thumbnails

OPEN_PATHS = frozenset({"/v1/health"})
"""Answered without a key: a monitor's health check (it tells the model, the gallery path and a count)."""

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
    state = ServiceState(config, verifier, engine, Thumbnails(config.gallery), streams, unknown, hooks)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        streams.close()
        hooks.close()
        engine.close()

    app = FastAPI(title="faceverify", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.service = state
    install_errors(app)

    async def auth(request: Request) -> None:
        if request.url.path not in OPEN_PATHS:
            authorize(config, request)

    app.include_router(build_router(state), dependencies=[Depends(auth)])
    app.include_router(build_live_router(state), dependencies=[Depends(auth)])
    install_page(app)
    app.add_middleware(BodyLimit, limit=config.max_body)
    return app


def serve(config: ServiceConfig, verifier: FaceVerifier | None = None, log_level: str = "info") -> None:
    """Run the service until interrupted (refuses a non-loopback address without a key)."""
    import uvicorn

    config.check_listen()
    app = create_app(config, verifier)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, server_header=False,
                proxy_headers=False, timeout_graceful_shutdown=5)
