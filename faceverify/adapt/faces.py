"""The faces an adaptation learns from: image files and folders, and the faces a gallery kept at enrolment
(:func:`gallery_faces`), detected and aligned once by the shipped front end into a face cache (as `faceverify
prepare` does), each image its own group; no labels are read (a gallery's crops are written without names).
Video files become the faces of their tracks (:mod:`.video`), each track one group. Ordinary faces (photos in
ordinary light, such as enrolment photos) are groups of one whose name starts with :data:`ORDINARY`: the anchor
holds the adapted model to the base on them as they are.

Folders are searched recursively; the cache records each file by its path relative to the deepest folder that
holds them all. Images without a face are left out of training (their centre-crop fallback teaches nothing).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._util import sha256_bytes, write_atomic
from ..modelcard import resolve_card
from ..errors import BadInputError
from ..gallery import Gallery
from ..images import list_images
from .video import VIDEO_SUFFIXES, is_video
from ..train.prepare import FaceCache, Listing, default_workers, prepare, scaled_geometries

ORDINARY = "ordinary:"
"""The prefix of an ordinary face's group name in the listing (and so in its face cache)."""

DETECTOR = "yunet-onet"
"""The stills front end's detector, which the adapted model will meet in use."""


def gallery_faces(gallery: Gallery, folder: Path) -> int:
    """Write every face ``gallery`` kept at enrolment into ``folder`` as ``<sha256 prefix>.jpg`` (the JPEG with
    margin it stored; no identity name); returns how many it holds. Enrolments without a kept face are skipped,
    and faces written before whose enrolment is gone (a person forgotten since) are deleted."""
    folder.mkdir(parents=True, exist_ok=True)
    kept: set[str] = set()
    for _, _, meta in gallery.iter_vectors(faces=True):
        crop = meta["face"]
        if crop is None:
            continue
        target = folder / f"{sha256_bytes(crop.image)[:20]}.jpg"
        if not target.exists():
            write_atomic(target, crop.image)
        kept.add(target.name)
    for stale in folder.glob("*.jpg"):
        if stale.name not in kept:
            stale.unlink()
    return len(kept)


def list_faces(sources: Sequence[str | Path], tracks: Sequence[Path] = (), ordinary: Sequence[str | Path] = ()) -> Listing:
    """The images of ``sources`` (files and folders) as a listing in which every image is its own group, those
    of each folder in ``tracks`` (a video track's faces, :mod:`.video`) one group per folder, and the images of
    ``ordinary`` groups of one named with :data:`ORDINARY` (an image given both ways counts as ordinary)."""
    extra = [p.resolve() for p in list_images(list(ordinary))]
    if ordinary and not extra:
        raise BadInputError(ordinary[0], "no images found")
    taken = set(extra)
    files = [p.resolve() for p in list_images([s for s in sources if not is_video(Path(s))])]
    files = [p for p in files if p not in taken]
    groups = list(range(len(files)))
    for track in tracks:
        faces = [p.resolve() for p in list_images([track])]
        if faces:
            groups += [groups[-1] + 1 if groups else 0] * len(faces)
            files += faces
    plain = len(files)
    groups += [(groups[-1] + 1 if groups else 0) + i for i in range(len(extra))]
    files += extra
    if not files:
        raise BadInputError(sources[0] if sources else "--from", "no images found")
    missing = next((p for p in files if not p.is_file()), None)
    if missing is not None:
        raise BadInputError(missing, "no such file")
    root = Path(os.path.commonpath([p.parent for p in files]))
    paths = [p.relative_to(root).as_posix() for p in files]
    labels = np.asarray(groups, np.int64)  # 0, 1, ... in order: each group named by its first face
    firsts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    return Listing(root, paths, labels, [(ORDINARY if i >= plain else "") + paths[i] for i in firsts])


def video_sources(sources: Sequence[str | Path]) -> list[Path]:
    """The video files among ``sources`` and inside its folders (recursively, sorted)."""
    return [p for p in list_images(list(sources), VIDEO_SUFFIXES) if is_video(p)]


def prepare_faces(
    listing: Listing, base: str, out: Path, progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> FaceCache:
    """The face cache of ``listing`` (:func:`list_faces`) at the input size and template of model ``base``
    (resumable, reused when complete)."""
    geometries = scaled_geometries([resolve_card(base)[0].input_size], base)
    workers = default_workers() if workers is None else workers
    return prepare(listing, out, geometries, "largest", workers, progress=progress, selection="unlabelled faces",
                   detector_kind=DETECTOR)
