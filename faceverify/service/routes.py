"""API v1 for stills and the gallery: health, verify, identify, identities. Each route is a thin layer over
:class:`faceverify.api.FaceVerifier` and :class:`faceverify.gallery.Gallery`, answering the CLI's ``--json``
objects."""

from __future__ import annotations

from enum import Enum
from typing import List, Optional

import numpy as np
from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from ..api import IdentifyResult, decision_of
from ..decision import DEFAULT_MATCH
from ..errors import BadInputError, NoFaceError, OperatingPointError
from ..gallery import Enrolment, validate_name
from .engine import ServiceState
from .errors import ApiError, gallery_name, status_of
from .thumbnails import scaled
from .uploads import Upload, read_upload


class AnyText(Convertor):
    """A path parameter matching any text, newlines and slashes included, so that the gallery (not the router)
    judges a name: a control character in one is a 422 naming the reason, never a 404."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", AnyText())


class Face(str, Enum):
    """Which faces count in an image holding several (the CLI's ``--face``)."""

    largest = "largest"
    center = "center"
    all = "all"


class Match(str, Enum):
    """What a face is compared with (the CLI's ``--match``): one template per identity, or every embedding."""

    template = "template"
    best = "best"


class Rename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


FarQ = Query(None, gt=0, le=1, description="False-accept rate whose calibrated threshold decides.")
ThresholdQ = Query(None, ge=-1, le=1, description="Cosine similarity threshold; overrides far.")
FaceQ = Query(Face.largest, description="Which faces count in an image holding several.")


def build_router(state: ServiceState) -> APIRouter:
    router = APIRouter(prefix="/v1")
    fv, engine, config = state.verifier, state.engine, state.config

    @router.get("/health")
    async def health() -> dict:
        """Open without a key (for monitors): the model, the gallery's name (not where it is), how many
        identities it holds, how many unknown faces the server keeps (``--keep-unknown``), and whether faces
        are judged live (``--liveness``)."""
        n = await engine.gallery(len)
        return dict(status="ok", model=fv.card.name, gallery=gallery_name(config.gallery), identities=n,
                    keep_unknown=config.keep_unknown, liveness=fv.pipeline.liveness is not None)

    async def faces_of(uploads: list[Upload], face: Face) -> list[list]:
        found = await engine.embed([u.image for u in uploads], face.value)
        for u, faces in zip(uploads, found):
            if not faces:
                raise NoFaceError(u.label)
        return [u.in_upload(faces) for u, faces in zip(uploads, found)]

    @router.post("/verify")
    async def verify(a: UploadFile = File(...), b: UploadFile = File(...), far: Optional[float] = FarQ,
                     threshold: Optional[float] = ThresholdQ, face: Face = FaceQ) -> dict:
        """Same person or not: the ``verify --json`` object."""
        fv.operating_point(far, threshold)  # a bad operating point fails before any work
        async with state.decoder.request() as images:
            uploads = await images.read([a], "a") + await images.read([b], "b")
            faces_a, faces_b = await faces_of(uploads, face)
        return fv.verify_faces(faces_a, faces_b, far, threshold).to_dict()

    @router.post("/identify")
    async def identify(image: UploadFile = File(...), fpir: Optional[float] = Query(None, gt=0, lt=1),
                       far: Optional[float] = FarQ, threshold: Optional[float] = ThresholdQ,
                       face: Face = FaceQ, match: Match = Query(Match(DEFAULT_MATCH))) -> dict:
        """Each face's identity (``name`` null when unknown): one line of ``identify --json``, with the threshold
        that decided and what chose it (``decision``). An FPIR the calibration cannot promise is refused."""

        def point_of(g):
            g.require_entries()
            point = fv.identification_point(g, far, threshold, fpir, match=match.value)
            promised = point.fpir is not None and point.fpir <= fpir * 1.0001 if fpir is not None else True
            if not promised and threshold is None and far is None:
                raise OperatingPointError(f"FPIR {fpir:g} cannot be promised for this gallery: the strictest threshold "
                                          f"the model's calibration reaches bounds it at {point.fpir:.3g}")
            return point

        await engine.gallery(point_of)  # a bad operating point fails before any work
        async with state.decoder.request() as images:
            uploads = await images.read([image], "image")
            (faces,) = await faces_of(uploads, face)

        def decide(g):
            point = point_of(g)
            return point, fv.identify_embeddings(g, np.stack([f.embedding for f in faces]), point, match.value)

        point, decisions = await engine.gallery(decide)
        return IdentifyResult(uploads[0].label, fv.face_identities(faces, decisions),
                              calibrated_front_end=fv.pipeline.calibrated_front_end,
                              decision=decision_of(point, far, threshold, fpir)).to_dict()

    @router.get("/identities")
    async def identities() -> list:
        """``gallery list --json``."""
        people = await engine.gallery(lambda g: g.identities())
        return [dict(name=p.name, embeddings=p.embeddings) for p in people]

    @router.post("/identities/{name:anything}/faces")
    async def enroll(name: str, images: List[UploadFile] = File(...), skip_bad: bool = False,
                     face: Face = FaceQ, keep_faces: bool = True, force: bool = False) -> dict:
        """Add faces to ``name`` (created if new): the ``enroll --json`` object. All or nothing unless
        ``skip_bad``; faces below the quality limits are refused (422) unless ``force``; each face's crop is kept
        for `gallery reembed` unless ``keep_faces=false``."""
        files: list[tuple[str, bytes] | BadInputError] = []
        if len(images) > config.max_files:
            raise ApiError(413, f"too many files ({len(images)}; the limit is {config.max_files} per request)")
        validate_name(name)  # a bad name fails before any file is read
        for i, f in enumerate(images):
            try:
                files.append(await read_upload(f, f"images{i + 1}", config))
            except BadInputError as exc:
                files.append(exc)
        return await enroll_files(state, name, files, skip_bad, face.value, keep_faces, force)

    @router.get("/identities/{name:anything}/thumbnail")
    async def thumbnail(name: str) -> Response:
        """A JPEG crop of one of the identity's enrolled faces."""
        rows = await engine.gallery(lambda g: g.embeddings_of(name))
        data = await run_in_threadpool(state.thumbs.find, rows)
        if data is None:
            raise ApiError(404, f"no face image kept for identity '{name}'")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @router.get("/identities/{name:anything}")
    async def show(name: str) -> dict:
        """``gallery show NAME --json``."""
        rows = await engine.gallery(lambda g: g.embeddings_of(name))
        return dict(name=name, embeddings=rows)

    @router.delete("/identities/{name:anything}")
    async def remove(name: str) -> dict:
        """Remove the identity and its embeddings: ``{"name", "removed": embeddings}``."""

        def work(g):
            rows = g.embeddings_of(name)
            return rows, g.remove(name)

        rows, n = await engine.gallery(work)
        await run_in_threadpool(state.thumbs.remove, rows)
        return dict(name=name, removed=n)

    @router.patch("/identities/{name:anything}")
    async def rename(name: str, body: Rename) -> dict:
        """Rename: the renamed identity's ``gallery show --json``."""
        new = validate_name(body.name)

        def work(g):
            g.rename(name, new)
            return g.embeddings_of(new)

        rows = await engine.gallery(work)
        return dict(name=new, embeddings=rows)

    return router


async def enroll_files(
    state: ServiceState, name: str, files: list[tuple[str, bytes] | BadInputError], skip_bad: bool = False,
    face: str = "largest", keep_faces: bool = True, force: bool = False,
) -> dict:
    """Enroll ``name`` from ``(label, bytes)`` files (a BadInputError stands for a file that could not be read):
    the ``enroll --json`` object. Any bad file (no face, or one below the quality limits unless ``force``) stops
    it with the gallery unchanged unless ``skip_bad``."""
    name = validate_name(name)
    engine = state.engine
    if not files:
        raise ApiError(422, "malformed request: no files in the multipart field 'images'")
    async with state.decoder.request() as images:
        uploads: list[Upload] = []
        failures: list[BadInputError] = []
        for f in files:
            if isinstance(f, BadInputError):
                failures.append(f)
                continue
            try:
                uploads.append(await images.decode(f[0], f[1]))
            except BadInputError as exc:
                failures.append(exc)
        items: list[tuple[Upload, Enrolment]] = []
        if uploads and (skip_bad or not failures):  # a file already refused stops it before any model work
            for u, faces in zip(uploads, await engine.embed([u.image for u in uploads], face)):  # type: ignore
                refused = NoFaceError(u.label) if not faces else None if force else engine.verifier.quality_refusal(
                    u.label, faces)
                if refused is not None:
                    failures.append(refused)
                    continue
                kept = [engine.verifier.pipeline.keep(u.image, f.face) if keep_faces else None for f in faces]
                items.extend((u, Enrolment(f.embedding, f"upload:{u.label}", u.sha256, f.box, k))
                             for f, k in zip(u.in_upload(faces), kept))
        failed = [str(f) for f in failures]
        if failures and (not skip_bad or not items):
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            suffix = "; nothing was enrolled" + ("" if skip_bad else " (fix or drop it, or pass skip_bad=true)")
            raise ApiError(status_of(failures[0]), f"{failures[0]}{more}{suffix}", failed=failed)

        def store(g):
            added = g.enroll(name, [e for _, e in items])
            return added, [row["id"] for row in g.embeddings_of(name)[-added:]] if added else []

        added, ids = await engine.gallery(store)
        for (u, e), ident in zip(items, ids):
            try:
                await run_in_threadpool(state.thumbs.save, u.image, ident, scaled(e.box, 1 / u.scale))
            except (OSError, ValueError):  # a thumbnail is a convenience; the enrolment stands
                pass
    return {"added": {name: added}, "failed": failed, "gallery": gallery_name(state.config.gallery)}

