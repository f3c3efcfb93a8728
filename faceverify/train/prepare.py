"""The face cache: the shipped front end (MTCNN, :func:`~faceverify.detect.select_faces`,
:func:`~faceverify.align.align_face`) run once over an identity-folder data set.

A cache is a directory::

    meta.json         what was prepared and how (source root, selection, face choice, geometries, detector)
    index.json        per image: source path (relative to the root), identity label; identity names
    status.npy        uint8 per image: 0 face found, 1 no face (centre-crop fallback), 2 unreadable (all zeros)
    boxes.npy         float32 N x 4 face boxes (x1, y1, x2, y2) in source pixels (NaN without a face)
    scores.npy        float32 detector scores (NaN without a face)
    landmarks.npy     float32 N x 5 x 2 landmarks in source pixels (NaN without a face)
    crops-<S>.npy     uint8 N x S x S x 3 aligned RGB crops, one file per crop size, memory-mappable
    done.json         the chunks already written: re-running skips them

Crops of size S use the reference model card's template scaled by S / its input size (for the shipped
``dlib-resnet-v1`` at 150 px that is its own template; at 112 px the same geometry, smaller).
Images without a detected face get the centre crop the pipeline uses as its fallback, flagged in ``status``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._util import sha256_bytes, write_atomic
from ..detect import AnyDetector, DetectorName, FaceChoice, make_detector, select_faces
from ..errors import BadInputError, FaceverifyError
from ..images import list_images, load_image

CACHE_VERSION = 1
FACE, NO_FACE, UNREADABLE = 0, 1, 2
DEFAULT_SIZES = (150, 112)


def default_cache_root() -> Path:
    """Where face caches go unless told otherwise: ``<user cache dir>/faces`` (see ``$FACEVERIFY_CACHE``)."""
    from ..eval.cache import default_cache_dir

    return default_cache_dir() / "faces"


def keyed_cache_dir(prefix: str, key: object, suffix: str = "") -> Path:
    """``<default cache root>/<prefix>-<hash of key><suffix>``: a cache folder per distinct ``key``
    (JSON-serialisable)."""
    return default_cache_root() / f"{prefix}-{sha256_bytes(json.dumps(key).encode())[:16]}{suffix}"


def default_workers() -> int:
    """Detector processes: none on CUDA (batched detection in this process), else up to 4."""
    import torch

    return 0 if torch.cuda.is_available() else min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Geometry:
    """One crop geometry: crop size in pixels and the 5-point template in that crop's pixel coordinates."""

    size: int
    template: list[list[float]]


def scaled_geometries(sizes: Sequence[int], reference: str | None = None) -> list[Geometry]:
    """The reference model card's template (default: the default model's) scaled to each crop size."""
    from ..modelcard import resolve_card

    card, _ = resolve_card(reference)
    out = []
    for size in sorted(set(sizes), reverse=True):
        k = size / card.input_size
        out.append(Geometry(size, [[round(x * k, 4), round(y * k, 4)] for x, y in card.template]))
    return out


@dataclass
class Listing:
    """The images of a data set: paths relative to ``root``, integer labels and identity names."""

    root: Path
    paths: list[str]
    labels: np.ndarray
    names: list[str]

    def digest(self) -> str:
        text = json.dumps([self.paths, self.labels.tolist(), self.names])
        return sha256_bytes(text.encode())


def list_identity_folders(root: Path) -> Listing:
    """Every image below each sub-folder of ``root``; one identity per sub-folder, sorted by name."""
    if not root.is_dir():
        raise BadInputError(root, "not a directory")
    paths: list[str] = []
    labels: list[int] = []
    names: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = list_images([folder])
        if files:
            labels += [len(names)] * len(files)
            paths += [f.relative_to(root).as_posix() for f in files]
            names.append(folder.name)
    if not paths:
        raise BadInputError(root, "no identity sub-folders with images")
    return Listing(root, paths, np.array(labels, np.int64), names)


def list_lfw_people(root: Path, people_file: Path) -> Listing:
    """The LFW images of the identities in a people file (``Name_NNNN.jpg``, 1..count per name)."""
    from ..eval.pairs import lfw_image_path, read_lfw_people

    paths: list[str] = []
    labels: list[int] = []
    names: list[str] = []
    for name, count in read_lfw_people(people_file):
        labels += [len(names)] * count
        paths += [lfw_image_path(name, i).as_posix() for i in range(1, count + 1)]
        names.append(name)
    return Listing(root, paths, np.array(labels, np.int64), names)


def list_lfw_pairs(root: Path, pairs_file: Path) -> Listing:
    """The distinct images of an LFW pairs file, labelled by identity (for evaluation caches)."""
    from ..eval.pairs import read_lfw_pairs

    unique = dict.fromkeys(p.as_posix() for pair in read_lfw_pairs(pairs_file) for p in (pair.path_a, pair.path_b))
    names = sorted({p.split("/")[0] for p in unique})
    index = {n: i for i, n in enumerate(names)}
    paths = sorted(unique)
    return Listing(root, paths, np.array([index[p.split("/")[0]] for p in paths], np.int64), names)


# ------------------------------------------------------------------------------------------------ reading


class FaceCache:
    """Read access to a prepared cache; ``crops(size)`` is a read-only memory map."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        try:
            self.meta = json.loads((self.dir / "meta.json").read_text())
            index = json.loads((self.dir / "index.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FaceverifyError(f"{self.dir}: not a face cache ({exc})") from None
        if self.meta.get("version") != CACHE_VERSION:
            raise FaceverifyError(f"{self.dir}: face cache version {self.meta.get('version')} is not {CACHE_VERSION}")
        self.root = Path(self.meta["root"])
        self.paths: list[str] = index["paths"]
        self.names: list[str] = index["names"]
        self.labels = np.asarray(index["labels"], np.int64)
        self.status = np.load(self.dir / "status.npy")
        self.boxes = np.load(self.dir / "boxes.npy")
        self.scores = np.load(self.dir / "scores.npy")
        self.landmarks = np.load(self.dir / "landmarks.npy")
        self.face: FaceChoice = self.meta["face"]
        self.geometries = {g["size"]: Geometry(g["size"], g["template"]) for g in self.meta["geometries"]}
        self.detector_kind: DetectorName = self.meta.get("detector", {}).get("kind", "mtcnn")
        self._crops: dict[int, np.ndarray] = {}

    @property
    def complete(self) -> bool:
        return _read_done(self.dir) >= set(range(_chunk_count(len(self.paths), self.meta["chunk_size"])))

    def crops(self, size: int) -> np.ndarray:
        """The N x size x size x 3 crops, memory-mapped read-only."""
        if size not in self.geometries:
            have = ", ".join(map(str, self.geometries))
            raise FaceverifyError(f"{self.dir}: no {size}px crops (prepared sizes: {have}); run prepare with --size {size}")
        if size not in self._crops:
            self._crops[size] = np.load(self.dir / f"crops-{size}.npy", mmap_mode="r")
        return self._crops[size]

    def template(self, size: int) -> list[list[float]]:
        self.crops(size)  # raises with a clear message for a size that was not prepared
        return self.geometries[size].template

    def absolute_paths(self) -> list[Path]:
        return [self.root / p for p in self.paths]


def _chunk_count(n: int, chunk: int) -> int:
    return (n + chunk - 1) // chunk


def _read_done(directory: Path) -> set[int]:
    try:
        return set(json.loads((directory / "done.json").read_text()))
    except (OSError, json.JSONDecodeError):
        return set()


def _write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data))


# ------------------------------------------------------------------------------------------------ writing


@dataclass
class ChunkResult:
    status: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    crops: dict[int, np.ndarray]


_DETECTOR: AnyDetector | None = None

DETECTOR_META = {
    "mtcnn": dict(name="MTCNN (facenet-pytorch)", min_face_size=20, score_threshold=0.9),
    "yunet": dict(kind="yunet", name="YuNet (OpenCV)", min_face_size=20),
    "yunet-onet": dict(kind="yunet-onet", name="YuNet's faces, MTCNN's ONet landmarks", min_face_size=20),
}
"""What ``meta.json`` records of each detector a cache can be prepared with."""


def _init_worker(device: str | None, threads: int, kind: DetectorName) -> None:
    global _DETECTOR
    _DETECTOR = make_detector(kind, device, threads=threads)


def process_chunk(
    files: Sequence[str], geometries: Sequence[Geometry], face: FaceChoice, detector: AnyDetector | None = None
) -> ChunkResult:
    """Detect, choose and align one face per image (centre crop when none is found); the geometry's template is
    for MTCNN's landmarks, moved to the detector's own (its ``template_for``)."""
    from ..align import align_face, center_crop

    detector = detector or _DETECTOR
    assert detector is not None, "process_chunk needs a detector (or a worker initialised by _init_worker)"
    n = len(files)
    status = np.full(n, UNREADABLE, np.uint8)
    boxes = np.full((n, 4), np.nan, np.float32)
    scores = np.full(n, np.nan, np.float32)
    landmarks = np.full((n, 5, 2), np.nan, np.float32)
    crops = {g.size: np.zeros((n, g.size, g.size, 3), np.uint8) for g in geometries}
    images: dict[int, np.ndarray] = {}
    for i, f in enumerate(files):
        try:
            images[i] = load_image(f)
        except BadInputError:
            continue
    order = list(images)
    detections = detector.detect([images[i] for i in order]) if order else []
    templates = {g.size: detector.template_for(np.asarray(g.template, np.float64)) for g in geometries}
    for i, faces in zip(order, detections):
        image = images[i]
        picked = select_faces(faces, image.shape, face)
        if picked:
            best = picked[0]
            status[i], boxes[i], scores[i], landmarks[i] = FACE, best.box, best.score, best.landmarks
        else:
            status[i] = NO_FACE
        for g in geometries:
            crops[g.size][i] = (align_face(image, picked[0].landmarks, templates[g.size], g.size) if picked
                                else center_crop(image, g.size))
    return ChunkResult(status, boxes, scores, landmarks, crops)


def prepare(
    listing: Listing,
    out: Path,
    geometries: Sequence[Geometry],
    face: FaceChoice = "center",
    workers: int = 0,
    chunk_size: int = 256,
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
    selection: str = "identity folders",
    detector: AnyDetector | None = None,
    detector_kind: DetectorName = "mtcnn",
) -> FaceCache:
    """Write (or finish) the face cache of ``listing`` in ``out``; chunks already written are skipped.

    ``workers`` > 0 runs that many detector processes (each with ``cpu_count // workers`` threads);
    0 detects in this process (the right choice on a GPU, where batched detection is the parallelism) with
    ``detector`` or a new one of ``detector_kind`` on ``device`` (MTCNN, training's front end, or YuNet, the
    CPU stills default, to evaluate models on its detections).
    """
    out.mkdir(parents=True, exist_ok=True)
    n = len(listing.paths)
    meta = dict(
        version=CACHE_VERSION,
        root=str(listing.root.resolve()),
        selection=selection,
        face=face,
        geometries=[asdict(g) for g in geometries],
        images=n,
        identities=len(listing.names),
        chunk_size=chunk_size,
        listing_sha256=listing.digest(),
        detector=DETECTOR_META[detector_kind],
    )
    meta_path = out / "meta.json"
    fresh = not meta_path.exists()
    if not fresh:
        old = json.loads(meta_path.read_text())
        keys = ("version", "root", "face", "geometries", "listing_sha256", "chunk_size", "detector")
        changed = [k for k in keys if old.get(k) != meta[k]]
        if changed:
            raise FaceverifyError(f"{out}: holds a different cache ({', '.join(changed)} differ); use another --out")
    else:
        _write_json(out / "index.json", dict(paths=listing.paths, labels=listing.labels.tolist(), names=listing.names))
        np.save(out / "status.npy", np.full(n, UNREADABLE, np.uint8))
        np.save(out / "boxes.npy", np.full((n, 4), np.nan, np.float32))
        np.save(out / "scores.npy", np.full(n, np.nan, np.float32))
        np.save(out / "landmarks.npy", np.full((n, 5, 2), np.nan, np.float32))
        for g in geometries:
            np.lib.format.open_memmap(out / f"crops-{g.size}.npy", "w+", np.uint8, (n, g.size, g.size, 3)).flush()
        _write_json(out / "done.json", [])
        _write_json(meta_path, meta)
    status = np.load(out / "status.npy", mmap_mode="r+")
    boxes = np.load(out / "boxes.npy", mmap_mode="r+")
    scores = np.load(out / "scores.npy", mmap_mode="r+")
    landmarks = np.load(out / "landmarks.npy", mmap_mode="r+")
    crops = {g.size: np.load(out / f"crops-{g.size}.npy", mmap_mode="r+") for g in geometries}
    done = _read_done(out)
    todo = [c for c in range(_chunk_count(n, chunk_size)) if c not in done]
    files = [str(listing.root / p) for p in listing.paths]

    def chunk_files(c: int) -> list[str]:
        return files[c * chunk_size : (c + 1) * chunk_size]

    if progress is not None:
        progress(sum(len(chunk_files(c)) for c in done))

    def store(chunk: int, result: ChunkResult) -> None:
        sl = slice(chunk * chunk_size, min(n, (chunk + 1) * chunk_size))
        for array, values in [(status, result.status), (boxes, result.boxes), (scores, result.scores),
                              (landmarks, result.landmarks), *((crops[k], v) for k, v in result.crops.items())]:
            array[sl] = values
            array.flush()
        done.add(chunk)
        _write_json(out / "done.json", sorted(done))
        if progress is not None:
            progress(sl.stop - sl.start)

    if workers <= 0:
        detector = detector or make_detector(detector_kind, device)
        for c in todo:
            store(c, process_chunk(chunk_files(c), geometries, face, detector))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(device, threads, detector_kind)) as pool:
            pending: dict[Future, int] = {}
            queue = list(todo)
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    c = queue.pop(0)
                    pending[pool.submit(process_chunk, chunk_files(c), list(geometries), face)] = c
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    store(pending.pop(fut), fut.result())
    return FaceCache(out)
