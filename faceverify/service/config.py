"""What a `faceverify serve` process is configured with, and the checks made before it listens."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FaceverifyError
from ..images import MAX_PIXELS

MiB = 1024 * 1024


@dataclass
class ServiceConfig:
    """Settings of one service process.

    ``api_keys`` may do everything; ``read_keys`` everything that changes nothing stored (reads, identify,
    verify). With neither, nobody needs a key (only allowed on a loopback address), and requests must name this
    server in ``Host`` (its address, ``localhost``, or one of ``allow_hosts``) and writes must not come from
    another site (``Origin``, ``Sec-Fetch-Site``). ``max_body`` caps a request body in bytes, ``max_image_bytes``
    one uploaded file, ``max_pixels`` one image, ``max_files`` the files of one enrolment. Images are decoded at
    most ``work_side`` pixels on their longer side, within ``decode_memory`` bytes for decodes and decoded images
    together. ``queue_size`` requests may wait for decoding and the model (503 beyond), batched ``batch_images``
    images at a time. A client has ``read_timeout`` seconds to send its request's headers, and as long for each
    part of its body (408, connection closed). ``keep_unknown``: face crops of the last N tracks a stream could
    not name, kept for the page to name or dismiss. ``webhooks``: URLs that get each decided track and each track
    end as JSON.
    """

    gallery: Path | str  # a file, or a postgresql:// URL (without its password: /v1/health shows it)
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = field(default_factory=list)
    read_keys: list[str] = field(default_factory=list)
    max_body: int = 32 * MiB
    max_image_bytes: int = 16 * MiB
    max_pixels: int = MAX_PIXELS
    max_files: int = 64
    work_side: int = 4096
    decode_memory: int = 512 * MiB
    read_timeout: float = 20.0
    allow_hosts: list[str] = field(default_factory=list)
    queue_size: int = 64
    batch_images: int = 16
    max_streams: int = 4
    keep_unknown: int = 0
    webhooks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from ..gallery import gallery_location, is_database_url
        from ..gallery.pgstore import redact

        self.gallery = gallery_location(self.gallery)
        if is_database_url(self.gallery) and redact(str(self.gallery)) != self.gallery:
            raise FaceverifyError(
                "serve: give the PostgreSQL password in PGPASSWORD or ~/.pgpass, not in the --gallery URL "
                "(the service shows its gallery to anyone at /v1/health)"
            )
        self.api_keys = [k for k in self.api_keys if k]
        self.read_keys = [k for k in self.read_keys if k]
        for key in self.api_keys + self.read_keys:
            if len(key) < 8 or not key.isascii() or not key.isprintable() or " " in key:
                raise FaceverifyError("an API key must be at least 8 printable ASCII characters without spaces")
        self.allow_hosts = [h.lower().rstrip(".") for h in self.allow_hosts if h]
        for name in ("max_body", "max_image_bytes", "max_pixels", "max_files", "queue_size", "batch_images",
                     "work_side", "decode_memory", "read_timeout"):
            if getattr(self, name) < 1:
                raise FaceverifyError(f"{name} must be at least 1")
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise FaceverifyError(f"webhook {url!r}: only http:// and https:// URLs are posted to")

    @property
    def secured(self) -> bool:
        return bool(self.api_keys or self.read_keys)

    def check_listen(self) -> None:
        """Refuse to listen beyond this machine without a key."""
        if not self.secured and not is_loopback(self.host):
            raise FaceverifyError(
                f"refusing to listen on {self.host} without an API key: anyone on the network could read and change "
                "the gallery (give --api-key or set FACEVERIFY_API_KEY, or listen on 127.0.0.1)"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
