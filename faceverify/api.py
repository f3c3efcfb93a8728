"""The Python API behind every CLI command: verify pairs, enroll identities, identify faces, re-embed a gallery
for another model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .align import FaceCrop
from .detect import FaceChoice
from .errors import BadInputError, ConflictError, FaceverifyError, GalleryError, LowQualityError
from .gallery import Enrolment, Gallery, gallery_location, is_database_url, open_gallery
from .gallery.pgstore import redact
from .gallery.records import parse_box
from .images import list_images
from .decision import (
    DEFAULT_FPIR, DEFAULT_MATCH, OperatingPoint, check_match, cosine, decide, identification_point, operating_point,
)
from .liveness import Liveness
from .modelcard import ModelCard
from .pipeline import FaceEmbedding, FacePipeline
from .quality import FaceQuality
from .quality.limits import DEFAULT_LIMITS, QualityLimits

if TYPE_CHECKING:
    import torch


@dataclass
class VerifyResult:
    """Outcome of comparing two images (the best-matching pair of their chosen faces); with liveness judged,
    ``liveness`` is image B's face's (the probe's: A is the reference photo), and a face not live is not the same."""

    same: bool
    similarity: float
    threshold: float
    far: float | None
    model: str
    boxes: tuple[list[float] | None, list[float] | None]
    calibrated_front_end: bool = True
    liveness: Liveness | None = None

    def to_dict(self) -> dict:
        out = dict(
            same=self.same,
            similarity=round(self.similarity, 6),
            threshold=round(self.threshold, 6),
            far=self.far,
            model=self.model,
            box_a=self.boxes[0],
            box_b=self.boxes[1],
            calibrated_front_end=self.calibrated_front_end,
        )
        if self.liveness is not None:
            out["liveness"] = self.liveness.to_dict()
        return out


@dataclass
class FaceIdentity:
    """One face in a probe image: its identity (None = unknown), score, the runner-up, and the face's quality
    with the reason the enrolment gate would refuse it (None: it would pass), and its liveness when judged (a
    face not live is never named, nor its nearest identity given)."""

    name: str | None
    score: float
    box: list[float] | None
    nearest: str | None
    quality: FaceQuality | None = None
    refusal: str | None = None
    liveness: Liveness | None = None

    def to_dict(self) -> dict:
        out = dict(name=self.name, score=round(self.score, 6), box=self.box, nearest=self.nearest)
        if self.liveness is not None:
            out["liveness"] = self.liveness.to_dict()
        if self.quality is not None:
            out["quality"] = dict(self.quality.to_dict(), enrollable=self.refusal is None, refusal=self.refusal)
        return out


@dataclass
class IdentifyResult:
    """The faces named in one image (or why it could not be read); ``calibrated_front_end`` False: the model's
    thresholds were calibrated through another detector than the one that found these faces; ``decision``: the
    threshold that named them and what chose it (:func:`decision_of`)."""

    image: str
    faces: list[FaceIdentity] = field(default_factory=list)
    error: str | None = None
    calibrated_front_end: bool = True
    decision: dict | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return dict(image=self.image, error=self.error)
        out = dict(image=self.image, faces=[f.to_dict() for f in self.faces],
                   calibrated_front_end=self.calibrated_front_end)
        if self.decision is not None:
            out["decision"] = self.decision
        return out


def decision_of(point: OperatingPoint, far: float | None, threshold: float | None, fpir: float | None) -> dict:
    """What decided an identification: ``by`` ("threshold", "far" or "fpir": an explicit threshold wins, then a
    FAR, else the FPIR target, default or given), the threshold, and the FAR and FPIR bound it stands for."""
    by = "threshold" if threshold is not None else "far" if far is not None else "fpir"
    return dict(by=by, threshold=round(point.threshold, 6), far=point.far, fpir=point.fpir,
                fpir_target=DEFAULT_FPIR if by == "fpir" and fpir is None else fpir)


@dataclass
class EnrollReport:
    """What an enrolment stored (per identity: new embeddings) and which inputs failed."""

    added: dict[str, int] = field(default_factory=dict)
    failures: list[BadInputError] = field(default_factory=list)


REEMBED_BATCH = 256
"""Kept faces re-embedded and written per transaction by :meth:`FaceVerifier.reembed`."""


@dataclass
class ReembedReport:
    """What a re-embedding wrote: faces re-embedded per identity, the identities that need new images (no face
    kept), those re-embedded from only some of their enrolments (how many had no face), new embeddings."""

    model: str
    target: str
    reembedded: dict[str, int] = field(default_factory=dict)
    need_images: list[str] = field(default_factory=list)
    partial: dict[str, int] = field(default_factory=dict)
    added: int = 0

    def to_dict(self) -> dict:
        return dict(model=self.model, gallery=self.target, reembedded=self.reembedded,
                    need_images=self.need_images, partial=self.partial, added=self.added)


class FaceVerifier:
    """The product in one object: a front end + model, and the decisions made with its calibrated thresholds."""

    def __init__(
        self,
        model: str | None = None,
        device: str | torch.device | None = None,
        pipeline: FacePipeline | None = None,
        quality_limits: QualityLimits = DEFAULT_LIMITS,
        **front_end: Any,
    ):
        """``front_end`` options (min_face_size, score_threshold, max_pixels, backend, detector, threads) configure
        the FacePipeline; ``quality_limits`` are the enrolment gate's (faceverify.quality.limits)."""
        self.pipeline = pipeline or FacePipeline(model, device, **front_end)
        self.quality_limits = quality_limits

    @property
    def card(self):
        return self.pipeline.card

    def operating_point(self, far: float | None = None, threshold: float | None = None,
                        card: ModelCard | None = None) -> OperatingPoint:
        """The verification operating point (``card``: the model's card for another detector, as video uses)."""
        return operating_point(card or self.pipeline.decision_card(), far, threshold)

    def identification_point(
        self,
        gallery: Gallery,
        far: float | None = None,
        threshold: float | None = None,
        fpir: float | None = None,
        looks: int = 1,
        match: str = "best",
        card: ModelCard | None = None,
    ) -> OperatingPoint:
        """Open-set operating point for searches of ``gallery`` (see decision.identification_point): the union
        bound counts templates (one per identity, bounded for its largest template) with ``match="template"``,
        every stored embedding with ``match="best"`` (the default here; ``identify`` and video pass their own);
        ``card`` as in :meth:`operating_point`."""
        card = card or self.pipeline.decision_card()
        if check_match(match) == "template":
            sizes = gallery.template_sizes()
            return identification_point(card, len(sizes), far, threshold, fpir, looks, max(sizes, default=1))
        return identification_point(card, gallery.embedding_count(), far, threshold, fpir, looks)

    def open_gallery(self, path: str | Path | None = None) -> Gallery:
        """Open (or create) a gallery bound to this model: an SQLite file, or a ``postgresql://`` URL (the
        PostgreSQL store, same interface); None: ``$FACEVERIFY_GALLERY`` or the default file. Refuses a gallery
        enrolled with another model."""
        return open_gallery(path, self.pipeline.embedding_id, self.card.embedding_size)  # type: ignore[return-value]

    # -- verify ------------------------------------------------------------------------------------------

    def verify(
        self,
        image_a: str | Path,
        image_b: str | Path,
        far: float | None = None,
        threshold: float | None = None,
        face: FaceChoice = "largest",
    ) -> VerifyResult:
        """Same person or not; with ``face='all'`` the most similar pair of faces decides."""
        self.operating_point(far, threshold)  # a bad operating point fails before any work
        faces_a = self.pipeline.embed_file(image_a, face)
        faces_b = self.pipeline.embed_file(image_b, face)
        return self.verify_faces(faces_a, faces_b, far, threshold)

    def verify_faces(
        self,
        faces_a: Sequence[FaceEmbedding],
        faces_b: Sequence[FaceEmbedding],
        far: float | None = None,
        threshold: float | None = None,
    ) -> VerifyResult:
        """:meth:`verify` for faces already embedded (the pipeline's output for each image, at least one face
        each): the most similar pair decides."""
        point = self.operating_point(far, threshold)
        pairs = ((fa, fb) for fa in faces_a for fb in faces_b)
        fa, fb = max(pairs, key=lambda p: cosine(p[0].embedding, p[1].embedding))  # first of equals, as before
        verdict = decide(fa.embedding, fb.embedding, point)
        live = fb.liveness is None or fb.liveness.live
        return VerifyResult(verdict.same and live, verdict.similarity, verdict.threshold, verdict.far, self.card.name,
                            (fa.box, fb.box), self.pipeline.calibrated_front_end, fb.liveness)

    # -- enroll ------------------------------------------------------------------------------------------

    def quality_refusal(self, label: str, faces: Sequence[FaceEmbedding]) -> LowQualityError | None:
        """Why the enrolment gate refuses an image (named ``label``) whose chosen faces are ``faces``: the first
        face below :attr:`quality_limits`, or None when all pass."""
        for f in faces:
            reason = None if f.quality is None else self.quality_limits.refusal(f.quality)
            if reason is not None:
                return LowQualityError(label, reason)
        return None

    def embed_for_enrolment(
        self, paths: Sequence[str | Path], face: FaceChoice = "largest", keep_faces: bool = True, force: bool = False
    ) -> tuple[list[Enrolment], list[BadInputError]]:
        """Embeddings ready to store for each readable image with a face that passes the quality gate (all of
        them with ``force``), with its face crop unless not ``keep_faces``, and the inputs that failed. Each file
        is read once: its stored sha256 is of the bytes the pipeline decoded."""
        items: list[Enrolment] = []
        failures: list[BadInputError] = []
        for result in self.pipeline.process_paths(paths, face, keep_faces=keep_faces):
            refused = None if force or result.error is not None else self.quality_refusal(result.path, result.faces)
            if result.error is not None or refused is not None:
                failures.append(result.error or refused)  # type: ignore[arg-type]
                continue
            source = str(Path(result.path).resolve())
            items.extend(Enrolment(f.embedding, source, result.sha256, f.box, f.crop) for f in result.faces)
        return items, failures

    def enroll(
        self,
        gallery: Gallery,
        name: str,
        inputs: Sequence[str | Path],
        skip_bad: bool = False,
        face: FaceChoice = "largest",
        keep_faces: bool = True,
        force: bool = False,
    ) -> EnrollReport:
        """Enroll one identity from image files and directories. Any bad input (unreadable, no face, or a face
        below the quality limits unless ``force``) stops the enrolment with the gallery unchanged unless
        ``skip_bad``, which stores the good images and reports the rest. With ``keep_faces`` (the default) each
        embedding keeps its face crop, so that :meth:`reembed` can move the identity to another model;
        ``keep_faces=False`` stores embeddings only."""
        from .gallery import validate_name

        name = validate_name(name)
        paths = list_images(list(inputs))
        if not paths:
            raise FaceverifyError(f"no images found in {', '.join(map(str, inputs))}")
        items, failures = self.embed_for_enrolment(paths, face, keep_faces, force)
        report = EnrollReport(failures=failures)
        if failures and not skip_bad:
            return report
        if items:
            report.added[name] = gallery.enroll(name, items)
        return report

    def enroll_folders(
        self,
        gallery: Gallery,
        root: str | Path,
        progress: Callable[[str], None] | None = None,
        keep_faces: bool = True,
        force: bool = False,
    ) -> EnrollReport:
        """One identity per sub-folder of ``root``; bad images (low quality ones too unless ``force``) are skipped
        and reported; ``keep_faces`` as in :meth:`enroll`."""
        root = Path(root)
        if not root.is_dir():
            raise BadInputError(root, "not a directory")
        report = EnrollReport()
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            paths = list_images([folder])
            if paths:
                items, failures = self.embed_for_enrolment(paths, keep_faces=keep_faces, force=force)
                report.failures.extend(failures)
                if items:
                    report.added[folder.name] = gallery.enroll(folder.name, items)
            if progress is not None:
                progress(folder.name)
        return report

    # -- re-embed ----------------------------------------------------------------------------------------

    def reembed(self, source: Gallery, target: str | Path, progress: Callable[[int], None] | None = None
                ) -> ReembedReport:
        """Write the gallery at ``target`` (new, or bound to this model already: running again finishes an
        interrupted run) from every face kept in ``source``: each re-aligned from its landmarks onto this model's
        template and embedded by this pipeline, under the same name, source and box, its face kept again.
        ``source`` (any model) is only read. Identities without a kept face are reported in ``need_images``;
        raises ConflictError, before anything is written, when none has one or ``target`` is ``source`` or is
        bound to another model. ``progress(n)`` after each batch of ``n`` faces."""
        plan = {p.name: [row["face"] for row in source.embeddings_of(p.name)] for p in source.identities()}
        report = ReembedReport(self.pipeline.embedding_id, str(gallery_location(target)))
        for name, kept in plan.items():
            if not any(kept):
                report.need_images.append(name)
            elif not all(kept):
                report.partial[name] = kept.count(False)
        if len(report.need_images) == len(plan):
            raise ConflictError(f"{source.path}: no enrolment has a kept face (enrolled with --no-keep-faces or "
                                "before faces were kept): nothing to re-embed, every identity needs new images")
        if _same_location(source.path, target):
            raise ConflictError(f"{source.path}: re-embedding writes a new gallery; give another --out than the source")
        with self.open_gallery(target) as dst:
            batch: list[tuple[str, dict]] = []
            for name, _, meta in source.iter_vectors(faces=True):
                if meta["face"] is not None:
                    batch.append((name, meta))
                if len(batch) == REEMBED_BATCH:
                    self._write_reembedded(source, dst, batch, report, progress)
            self._write_reembedded(source, dst, batch, report, progress)
        return report

    def _write_reembedded(self, source: Gallery, target: Gallery, batch: list[tuple[str, dict]],
                          report: ReembedReport, progress: Callable[[int], None] | None) -> None:
        """Embed a batch of kept faces (name, stored metadata), store them in ``target`` (one transaction) and
        empty the batch."""
        if not batch:
            return
        try:
            vectors = self.pipeline.embed_kept([meta["face"] for _, meta in batch])
        except ValueError as exc:
            name, meta = next((n, m) for n, m in batch if not _decodes(m["face"]))
            raise GalleryError(f"{source.path}: the kept face of '{name}' from {meta['source']} is unusable "
                               f"({exc})") from None
        people: dict[str, list[Enrolment]] = {}
        for (name, meta), vector in zip(batch, vectors):
            people.setdefault(name, []).append(
                Enrolment(vector, meta["source"], meta["source_sha256"], parse_box(meta["box"]), meta["face"]))
            report.reembedded[name] = report.reembedded.get(name, 0) + 1
        report.added += sum(target.enroll_many(people.items()).values())
        if progress is not None:
            progress(len(batch))
        batch.clear()

    # -- identify ----------------------------------------------------------------------------------------

    def identify_embeddings(
        self, gallery: Gallery, vectors: np.ndarray, point: OperatingPoint, match: str = "best"
    ) -> list[tuple[str | None, float, str | None]]:
        """(name or None, score, nearest identity) for each embedding at the given operating point, against each
        identity's template (``match="template"``) or its best stored embedding (``"best"``)."""
        ranked = gallery.search_templates(vectors) if check_match(match) == "template" else gallery.search(vectors)
        out = []
        for candidates in ranked:
            nearest, score = candidates[0]
            out.append((nearest if score >= point.threshold else None, score, nearest))
        return out

    def identify(
        self,
        gallery: Gallery,
        inputs: Iterable[str | Path],
        far: float | None = None,
        threshold: float | None = None,
        face: FaceChoice = "largest",
        fpir: float | None = None,
        match: str = DEFAULT_MATCH,
    ) -> Iterator[IdentifyResult]:
        """For each image, each chosen face's best identity or None (unknown), with its score. The threshold is
        ``threshold``, else the one for ``far``, else the one that holds the gallery's FPIR under ``fpir``;
        ``match`` says what a face is compared with (see :meth:`identify_embeddings`)."""
        gallery.require_entries()
        point = self.identification_point(gallery, far, threshold, fpir, match=match)
        for result in self.pipeline.process_paths(list_images(list(inputs)), face):
            if result.error is not None:
                yield IdentifyResult(result.path, error=result.error.reason)
                continue
            vectors = np.stack([f.embedding for f in result.faces])
            decisions = self.identify_embeddings(gallery, vectors, point, match)
            yield IdentifyResult(result.path, self.face_identities(result.faces, decisions),
                                 calibrated_front_end=self.pipeline.calibrated_front_end,
                                 decision=decision_of(point, far, threshold, fpir))

    def face_identities(self, faces: Sequence[FaceEmbedding], decisions: Sequence[tuple[str | None, float, str | None]]
                        ) -> list[FaceIdentity]:
        """Each face with its decision (from :meth:`identify_embeddings`; none for a face judged not live), its
        quality and the gate's verdict."""
        return [FaceIdentity(*((n, s, f.box, near) if f.liveness is None or f.liveness.live else (None, s, f.box, None)),
                             f.quality, None if f.quality is None else self.quality_limits.refusal(f.quality),
                             f.liveness) for f, (n, s, near) in zip(faces, decisions)]


def _same_location(path: object, target: str | Path) -> bool:
    """Whether a gallery opened at ``path`` (its ``path``: a file, or a URL without its password) is the one
    at ``target``."""
    where = gallery_location(target)
    if is_database_url(where) or is_database_url(str(path)):
        return redact(str(where)) == str(path)
    return Path(str(path)).resolve() == Path(where).resolve()


def _decodes(face: FaceCrop) -> bool:
    """Whether a kept face's image decodes."""
    try:
        face.pixels()
    except ValueError:
        return False
    return True


def gallery_model(location: str | Path | None) -> tuple[str, bool] | None:
    """(model name, flip fusion) of the model an existing gallery at ``location`` was enrolled with, when that
    model is available here: a gallery keeps answering with the model that made it when the default changes.
    None for a new or empty gallery, or one whose model is not installed (opening it then says so)."""
    from .modelcard import available_models
    from .errors import GalleryError
    from .gallery import gallery_exists, gallery_location

    location = gallery_location(location)
    if not gallery_exists(location):
        return None
    try:
        with open_gallery(location, create=False) as store:
            stored = store.stored_model_id
    except GalleryError:  # no gallery in that database yet
        return None
    if stored is None:
        return None
    name = stored.split("@", 1)[0]
    return (name, stored.endswith("+flip")) if name in available_models() else None
