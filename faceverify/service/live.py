"""API v1 for live video: streams (start, list, stop), their events as Server-Sent Events and their annotated
video as MJPEG, and the unknown faces they kept to name or dismiss."""

from __future__ import annotations

import asyncio
import json
from typing import Literal, Optional, Union

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from .engine import ServiceState
from .routes import enroll_files
from .streams import Stream

BOUNDARY = "faceverify-frame"
KEEPALIVE = 15.0


class StreamStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Union[int, str] = Field(..., description="Camera index, video file on the server, or rtsp/http URL.")
    realtime: Optional[bool] = Field(None, description="Read a file at its frame rate (default true), as a camera.")
    fpir: Optional[float] = Field(None, gt=0, lt=1)
    far: Optional[float] = Field(None, gt=0, le=1)
    threshold: Optional[float] = Field(None, ge=-1, le=1)
    match: Optional[Literal["template", "best"]] = Field(None, description="What a track is named against.")


class Naming(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


async def _events(stream: Stream, request: Request, since: int):
    last, quiet = since, 0.0
    while True:
        items = stream.events_after(last)
        for seq, item in items:
            yield f"id: {seq}\ndata: {json.dumps(item)}\n\n"
            last = seq
        if not items:
            if stream.finished.is_set() and not stream.events_after(last):
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.1)
            quiet += 0.1
            if quiet >= KEEPALIVE:
                quiet = 0.0
                yield ": keep-alive\n\n"
        else:
            quiet = 0.0


async def _frames(stream: Stream, request: Request):
    stream.viewers += 1
    try:
        last = None
        while True:
            latest = stream.latest_jpeg()
            if latest is not None and latest[0] != last:
                last, data = latest
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n").encode() \
                    + data + b"\r\n"
                continue
            if stream.finished.is_set():
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.03)
    finally:
        stream.viewers -= 1


def build_live_router(state: ServiceState) -> APIRouter:
    router = APIRouter(prefix="/v1")
    streams, unknown = state.streams, state.unknown

    @router.post("/streams", status_code=201)
    async def start(body: StreamStart) -> dict:
        """Start identifying people on a source inside the server; answers once it runs (400 if it cannot be
        opened)."""
        source = str(body.source)
        stream = await run_in_threadpool(streams.start, source, body.realtime, fpir=body.fpir, far=body.far,
                                         threshold=body.threshold, match=body.match)
        return stream.describe()

    @router.get("/streams")
    async def list_streams() -> list:
        return streams.list()

    @router.get("/streams/{ident}")
    async def show_stream(ident: int) -> dict:
        return streams.get(ident).describe()

    @router.delete("/streams/{ident}")
    async def stop(ident: int) -> dict:
        """Stop the stream and forget it: its description with the run's summary."""
        return await run_in_threadpool(streams.remove, ident)

    @router.get("/streams/{ident}/events")
    async def events(ident: int, request: Request, since: Optional[int] = Query(None, ge=0),
                     last_event_id: Optional[str] = Header(None)) -> StreamingResponse:
        """The ``identify --source --json`` objects as Server-Sent Events (``data:`` JSON, ``id:`` a sequence
        number): new ones from now on, or those after ``since`` (0: the backlog) or ``Last-Event-ID``."""
        stream = streams.get(ident)
        start_at = since
        if start_at is None and last_event_id and last_event_id.isdigit():
            start_at = int(last_event_id)
        if start_at is None:
            start_at = stream.seq
        return StreamingResponse(_events(stream, request, start_at), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/streams/{ident}/video")
    async def video(ident: int, request: Request) -> StreamingResponse:
        """The annotated video as MJPEG (``multipart/x-mixed-replace``): an ``<img src>`` shows it live."""
        stream = streams.get(ident)
        return StreamingResponse(_frames(stream, request), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-cache"})

    @router.get("/streams/{ident}/frame")
    async def frame(ident: int) -> Response:
        """The latest annotated frame as one JPEG."""
        latest = streams.get(ident).latest_jpeg()
        if latest is None:
            return Response(status_code=204)
        return Response(latest[1], media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @router.get("/unknown")
    async def list_unknown() -> list:
        """The unknown faces kept (``--keep-unknown N``), newest first."""
        return unknown.list()

    @router.get("/unknown/{ident}/image")
    async def unknown_image(ident: int) -> Response:
        return Response(unknown.get(ident).image, media_type="image/jpeg")

    @router.post("/unknown/{ident}/enroll")
    async def name_unknown(ident: int, body: Naming) -> dict:
        """Enroll the kept face as ``name`` (the ``enroll --json`` object) and drop it from the list."""
        face = unknown.get(ident)
        report = await enroll_files(state, body.name, [(f"unknown-{face.stream}-{face.track}.jpg", face.image)])
        unknown.pop(ident)
        return report

    @router.delete("/unknown/{ident}")
    async def dismiss(ident: int) -> dict:
        unknown.pop(ident)
        return dict(dismissed=ident)

    return router
