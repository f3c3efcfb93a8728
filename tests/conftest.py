"""Shared fixtures: LFW from ../shared (skipped with a reason when absent) and one loaded model per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceverify.pairs import find_lfw_root, lfw_image_dir


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    root = find_lfw_root()
    if root is None:
        pytest.skip("LFW not found: set FACEVERIFY_LFW or place it at ../shared/datasets/lfw")
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
