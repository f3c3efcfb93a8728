"""`faceverify serve`: the REST service and its web page (faceverify.service), on uvicorn."""

from __future__ import annotations

from typing import List, Optional

import typer

from .options import (BackendChoiceOpt, BackendOpt, DetectorChoiceOpt, DetectorOpt, DeviceOpt, GalleryOpt, ListOptions,
                      LivenessOpt, LivenessThresholdOpt, ModelOpt, app)


@app.command(cls=ListOptions)
def serve(
    gallery: Optional[str] = GalleryOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (another than loopback needs a key)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="FACEVERIFY_API_KEY", show_envvar=True,
                                          show_default=False, help="Key for reads and writes (Authorization: Bearer KEY)."),
    read_key: Optional[str] = typer.Option(None, "--read-key", envvar="FACEVERIFY_READ_KEY", show_envvar=True,
                                           show_default=False, help="A key that may read, identify and verify, but change nothing."),
    webhook: Optional[List[str]] = typer.Option(None, "--webhook", help="URL to post each decided track and each "
                                                "track end to, as JSON (several: --webhook URL1 URL2)."),
    keep_unknown: int = typer.Option(0, "--keep-unknown", min=0, max=10_000, help="Keep the best face of the last N "
                                     "unknown tracks, for the page to name or dismiss."),
    max_body_mb: float = typer.Option(32, "--max-body-mb", min=0.01, help="Largest request body, MiB (413 above)."),
    max_image_mb: float = typer.Option(16, "--max-image-mb", min=0.01, help="Largest uploaded file, MiB (413 above)."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", min=1, help="Largest image, pixels (413 above)."),
    decode_mb: float = typer.Option(512, "--decode-memory-mb", min=16, help="Memory for decoding uploads and "
                                    "holding decoded images, MiB (requests wait for it; 503 after 30 s)."),
    read_timeout: float = typer.Option(20, "--read-timeout", min=0.1, max=3600, help="Seconds a client has to "
                                       "send its headers, and for each part of its body (408 after)."),
    allow_host: Optional[List[str]] = typer.Option(None, "--allow-host", help="Another name this server answers "
                                                   "to without a key (Host header; DNS rebinding sends others)."),
    queue_size: int = typer.Option(64, "--queue", min=1, help="Requests that may wait for the model (503 above)."),
    batch: int = typer.Option(16, "--batch", min=1, help="Images embedded together from concurrent requests."),
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    backend: Optional[BackendOpt] = BackendChoiceOpt,
    detector: Optional[DetectorOpt] = DetectorChoiceOpt,
    threads: int = typer.Option(1, "--threads", min=1, max=256, help="CPU threads for the detector and the network."),
    liveness: bool = LivenessOpt,
    liveness_threshold: Optional[float] = LivenessThresholdOpt,
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level (critical, error, warning, info)."),
) -> None:
    """Serve the REST API (v1, OpenAPI page at /docs) and the web page (/) on one loaded model and the gallery
    the CLI uses (with --liveness, a face judged not live is never named, in images and in streams). Ctrl-C
    stops it."""
    from ..errors import require
    from ..gallery import gallery_location

    require("serve", "serve")
    from ..service import ServiceConfig, serve as run_service
    from .core import _verifier

    mib = 1024 * 1024
    config = ServiceConfig(
        gallery=gallery_location(gallery), host=host, port=port,
        api_keys=[api_key] if api_key else [], read_keys=[read_key] if read_key else [],
        max_body=int(max_body_mb * mib), max_image_bytes=int(max_image_mb * mib), max_pixels=max_pixels,
        decode_memory=int(decode_mb * mib), read_timeout=read_timeout, allow_hosts=list(allow_host or []),
        queue_size=queue_size, batch_images=batch, keep_unknown=keep_unknown, webhooks=list(webhook or []),
    )
    config.check_listen()  # before the model loads
    fv = _verifier(model, device, backend, detector, threads, gallery=gallery, uses_gallery=True, liveness=liveness,
                   liveness_threshold=liveness_threshold)
    fv.pipeline.max_pixels = max_pixels
    typer.echo(f"faceverify: serving {fv.card.name} on http://{host}:{port}/ (gallery {config.gallery}; "
               f"{'key required' if config.secured else 'no key'}{'; liveness judged' if liveness else ''})", err=True)
    run_service(config, fv, log_level=log_level)
