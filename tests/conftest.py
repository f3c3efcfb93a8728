"""Shared fixtures: LFW (skipped with a reason when absent), one loaded model per session, a gallery location.

LFW comes from ``$FACEVERIFY_LFW``; in a development checkout that variable defaults to ``../shared/datasets/lfw``
when that folder exists, set in ``os.environ`` at import so that the CLI subprocesses of the tests inherit it.
With ``FACEVERIFY_REQUIRE_DATA=1`` (CI, where the data is there) a test whose data is absent fails instead of
being skipped: see :func:`require_data`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

from faceverify.errors import BadInputError
from faceverify.eval.pairs import LFW_ENV, find_lfw_root, lfw_image_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_LFW = REPO_ROOT.parent / "shared" / "datasets" / "lfw"
REQUIRE_DATA_ENV = "FACEVERIFY_REQUIRE_DATA"

if not os.environ.get(LFW_ENV, "").strip() and DEV_LFW.is_dir():
    os.environ[LFW_ENV] = str(DEV_LFW)

# No test reads or writes the user's own data folder (their models, their default gallery): the session gets a
# fresh one, which the CLI subprocesses inherit (platformdirs follows XDG_DATA_HOME).
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="faceverify-test-data-")


def require_data(reason: str) -> NoReturn:
    """Skip the calling test or fixture because data it needs is absent, or fail it when
    ``$FACEVERIFY_REQUIRE_DATA`` is 1."""
    if os.environ.get(REQUIRE_DATA_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_DATA_ENV}=1: data must be present)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    try:
        root = find_lfw_root()
    except BadInputError as exc:
        require_data(f"LFW not usable: {exc}")
    if root is None:
        require_data(f"LFW not found: set {LFW_ENV} or place it at {DEV_LFW}")
    return root


@pytest.fixture(scope="session")
def lfw_images(lfw_root: Path) -> Path:
    return lfw_image_dir(lfw_root)


@pytest.fixture(scope="session")
def lfw_image(lfw_images: Path):
    """lfw_image(name, i) -> path of image i (1-based) of that person."""

    def path(name: str, i: int) -> Path:
        return lfw_images / name / f"{name}_{i:04d}.jpg"

    return path


@pytest.fixture(scope="session")
def drifting_face_video(tmp_path_factory, lfw_image) -> Path:
    """A one-second video: Colin Powell's second LFW photo drifting across a grey 640x480 frame."""
    import cv2
    import numpy as np

    from faceverify.images import load_image

    face = cv2.cvtColor(load_image(lfw_image("Colin_Powell", 2)), cv2.COLOR_RGB2BGR)
    video = tmp_path_factory.mktemp("video") / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    for i in range(25):
        frame = np.full((480, 640, 3), 90, np.uint8)
        frame[100:350, 40 + 8 * i:290 + 8 * i] = face
        writer.write(frame)
    writer.release()
    return video


@pytest.fixture(scope="session")
def verifier():
    from faceverify.api import FaceVerifier

    return FaceVerifier(device="cpu")


@pytest.fixture()
def gallery_env(tmp_path, monkeypatch) -> Path:
    """A throw-away gallery location, also set as $FACEVERIFY_GALLERY."""
    path = tmp_path / "gallery.sqlite"
    monkeypatch.setenv("FACEVERIFY_GALLERY", str(path))
    return path


@pytest.fixture(scope="session")
def service_scene(tmp_path_factory, lfw_root, verifier) -> dict:
    """The video tests' 4 s scene (two enrolled DevTest people, one never enrolled, four distractors), made once
    for the service tests: ``video``, ``truth`` (with the gallery to enroll)."""
    from tests.servers import make_scene

    return make_scene(tmp_path_factory.mktemp("service-video"), lfw_root, verifier.pipeline.detector)


# -- PostgreSQL (the second gallery store) ----------------------------------------------------------------

POSTGRES_ENV = "FACEVERIFY_TEST_POSTGRES"


class PostgresForTests:
    """A PostgreSQL server with pgvector for the tests: ``$FACEVERIFY_TEST_POSTGRES`` (a URL of a database the
    tests may create schemas and databases from), else one started by the ``pgserver`` wheel in a temporary
    folder. ``url(schema=...)`` points a gallery at its own schema; ``admin()`` is a superuser connection."""

    def __init__(self, base_url: str, server=None, data_dir: Path | None = None):
        self.base_url, self.server, self.data_dir = base_url, server, data_dir
        self._count = 0

    def with_db(self, dbname: str, **params: str) -> str:
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        parts = urlsplit(self.base_url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True)) | params
        return urlunsplit(parts._replace(path="/" + dbname, query=urlencode(query, safe="/")))

    def admin(self):
        import psycopg

        return psycopg.connect(self.base_url, autocommit=True)

    def fresh_url(self) -> str:
        """A URL whose galleries live in a new, empty schema of the base database (pgvector in ``public``)."""
        from urllib.parse import urlsplit

        self._count += 1
        schema = f"fv_test_{os.getpid()}_{self._count}"
        with self.admin() as con:
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            con.execute(f"CREATE SCHEMA {schema}")
            con.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        dbname = urlsplit(self.base_url).path.lstrip("/") or "postgres"
        return self.with_db(dbname, options=f"-csearch_path={schema},public")


@pytest.fixture(scope="session")
def postgres():
    """The tests' PostgreSQL (see PostgresForTests); skipped when none can be started (fails under
    ``$FACEVERIFY_REQUIRE_DATA=1``)."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if url:
        yield PostgresForTests(url)
        return
    try:
        import pgserver
        import psycopg  # noqa: F401
        import pgvector  # noqa: F401
    except ImportError as exc:
        require_data(f"PostgreSQL tests need pgserver, psycopg and pgvector ({exc}): pip install -e '.[postgres,dev]'")
    import shutil
    import tempfile

    # Not under pytest's folders: run as root, pgserver runs PostgreSQL as its own user, which must reach the data.
    data_dir = Path(tempfile.mkdtemp(prefix="faceverify-postgres-"))
    data_dir.chmod(0o755)
    try:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported as the reason
        shutil.rmtree(data_dir, ignore_errors=True)
        require_data(f"pgserver could not start PostgreSQL: {exc}")
    pg = PostgresForTests(server.get_uri(), server, data_dir)
    with pg.admin() as con:  # a throw-away server: skip the disk flushes (the tests kill clients, not it)
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            con.execute(f"ALTER SYSTEM SET {setting}")
        con.execute("SELECT pg_reload_conf()")
    try:
        yield pg
    finally:
        try:  # immediate: no shutdown checkpoint of a server about to be deleted
            pgserver.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=data_dir, user=server.system_user)
            server.cleanup_mode = None
        except Exception:  # noqa: BLE001 - then cleanup() stops (or kills) it
            pass
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def gallery_location(request, tmp_path):
    """A new gallery's location in each store: an SQLite file, a PostgreSQL URL (its own schema)."""
    if request.param == "sqlite":
        return tmp_path / "g.sqlite"
    return request.getfixturevalue("postgres").fresh_url()
