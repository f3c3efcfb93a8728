"""Shared fixtures: LFW (skipped with a reason when absent), one loaded model per session, a gallery location.

LFW comes from ``$FACEVERIFY_LFW``; in a development checkout that variable defaults to ``../shared/datasets/lfw``
when that folder exists, set in ``os.environ`` at import so that the CLI subprocesses of the tests inherit it.
With ``FACEVERIFY_REQUIRE_DATA=1`` (CI, where the data is there) a test whose data is absent fails instead of
being skipped: see :func:`require_data`.
"""

from __future__ import annotations

import os
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
