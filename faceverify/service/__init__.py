"""`faceverify serve`: the REST service (API v1) and its web page, a thin layer over :mod:`faceverify.api`.

``config`` (what a process is configured with), ``guard`` (API keys, the body cap), ``errors`` (exceptions to
one-line JSON errors with their status), ``engine`` (the shared model behind a batching worker, the gallery
thread, the shared state), ``uploads`` (reading and decoding uploads, enrolment from them, thumbnails),
``routes`` (health, verify, identify, identities), ``streams`` (video identification inside the server),
``observers`` (webhooks, unknown faces kept to name), ``live`` (stream, SSE, MJPEG and unknown-face routes),
``page`` (the HTML page), ``app`` (the FastAPI app and :func:`serve`).
"""

from .app import create_app, serve
from .config import ServiceConfig

__all__ = ["ServiceConfig", "create_app", "serve"]
