"""The gallery store: persistence across processes, one model per gallery, names, edits, search; each behaviour
on both stores (an SQLite file, a PostgreSQL database: the ``gallery_location`` fixture)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from faceverify.errors import GalleryError
from faceverify.gallery import Enrolment, Gallery, open_gallery, validate_name

MODEL = "test-model@1:abc"


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _items(seed: int, n: int = 2) -> list[Enrolment]:
    return [Enrolment(_unit(seed * 100 + i), f"/img/{seed}_{i}.jpg", f"sha{seed}_{i}") for i in range(n)]


def _top(g: Gallery, query: np.ndarray) -> str:
    """The best-matching identity for one query."""
    return g.search(query[None, :])[0][0][0]


def test_enroll_search_and_persist_across_processes(gallery_location):
    path = gallery_location
    with open_gallery(path, MODEL, 16) as g:
        assert g.enroll("Alice", _items(1)) == 2
        assert g.enroll("Bob", _items(2)) == 2
        assert g.enroll("Alice", _items(1)) == 0  # the same faces again: nothing new
    code = (
        "import sys, numpy as np\n"
        "from faceverify.gallery import open_gallery\n"
        f"g = open_gallery(sys.argv[1], {MODEL!r}, 16)\n"
        "print(';'.join(f'{i.name}={i.embeddings}' for i in g.identities()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Alice=2;Bob=2"
    with open_gallery(path, MODEL, 16) as g:
        probe = _unit(200) + 0.05 * _unit(999)  # near Bob's first face
        ranked = g.search((probe / np.linalg.norm(probe))[None, :])[0]
        assert [name for name, _ in ranked] == ["Bob", "Alice"] and ranked[0][1] > 0.9


def test_another_model_is_refused(gallery_location):
    path = gallery_location
    with open_gallery(path, MODEL, 16) as g:
        g.enroll("Alice", _items(1))
    with pytest.raises(GalleryError, match="never mixed"):
        open_gallery(path, "other-model@1:def", 16)
    with open_gallery(path, MODEL, 16) as g:
        with pytest.raises(GalleryError, match="has size 8"):
            g.enroll("Bob", [Enrolment(_unit(5, 8), "/img/b.jpg", "shab")])
        assert [i.name for i in g.identities()] == ["Alice"]


def test_remove_rename_and_stale_index(gallery_location):
    with open_gallery(gallery_location, MODEL, 16) as g:
        g.enroll("Alice", _items(1))
        g.enroll("Bob", _items(2))
        assert _top(g, _unit(100)) == "Alice"
        g.rename("Alice", "Alice Smith")
        assert _top(g, _unit(100)) == "Alice Smith"  # index follows the database
        assert g.remove("Alice Smith") == 2
        assert [i.name for i in g.identities()] == ["Bob"]
        assert _top(g, _unit(100)) == "Bob"
        with pytest.raises(GalleryError, match="no identity named"):
            g.remove("Alice")
        with pytest.raises(GalleryError, match="already exists"):
            g.enroll("Carol", _items(3))
            g.rename("Carol", "Bob")


def test_empty_gallery_search_is_an_error(gallery_location):
    with open_gallery(gallery_location, MODEL, 16) as g:
        where = re.escape(f"{g.path}: the gallery is empty (enroll someone first)")
        with pytest.raises(GalleryError, match=where):
            g.require_entries()
        with pytest.raises(GalleryError, match="empty"):
            g.search(_unit(1)[None, :])
        g.enroll("Alice", _items(1))
        g.require_entries()


def test_not_a_gallery_file(tmp_path):
    bogus = tmp_path / "g.sqlite"
    bogus.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(GalleryError, match="not a faceverify gallery"):
        Gallery(bogus, MODEL, 16)


@pytest.mark.parametrize(
    "name, problem",
    [("", "empty"), ("   ", "empty"), ("a/b", "path separator"), ("..\\x", "path separator"),
     ("bad\nname", "control"), ("zero\u200bwidth", "invisible"), ("x" * 200, "longer")],
)
def test_bad_names_are_refused(name, problem):
    with pytest.raises(GalleryError, match=problem):
        validate_name(name)


def test_names_are_normalised():
    assert validate_name("  Zoë  ") == "Zo\u00eb"
    assert validate_name("Zo\u0065\u0308") == "Zo\u00eb"  # decomposed form becomes the composed one
