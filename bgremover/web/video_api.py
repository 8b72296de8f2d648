"""The video job API: a clip is a job, because removing its background takes longer than an HTTP
request should stay open.

    POST   /api/video              multipart: file + options -> 202 {"id", "status", ...}, Location
    GET    /api/video/{id}         status: queued, running, done, failed or cancelled; frames and progress
    GET    /api/video/{id}/result  the finished file (409 while it is not done)
    DELETE /api/video/{id}         cancels it if it runs, removes it and its files

Form fields besides the file: output, bg_color, threshold, refine_edges, size, model, format,
smooth (0-1), quality (draft, standard, high, master), start and end (in and out points, seconds).
Statuses: 400 bad options, 404 unknown or expired job, 413 upload or clip past a limit,
415 not a readable video, 501 PyAV missing, 503 too many jobs waiting (Retry-After).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import FormData, UploadFile

from .. import settings
from ..choices import PHOTO_ONLY_OUTPUTS
from ..service.admission import Busy
from ..service.options import build_request, parse_number
from ..service.removal import RemovalService
from .api import ApiError, check_token, checked_upload, disposition, read_form

if TYPE_CHECKING:  # PyAV: only where it is installed
    from ..video.jobs import VideoJobs

OPTION_FIELDS = ("output", "bg_color", "threshold", "refine_edges", "size", "model", "keep_hidden_color")
FIELDS = ("file", *OPTION_FIELDS, "format", "smooth", "quality", "start", "end")
SECONDS = (0, 24 * 3600)  # the in and out points' range


def video_jobs(service: RemovalService) -> VideoJobs | None:
    """The server's one queue of video jobs, which the API and the UI's Video tab share; None
    without PyAV (the routes and the tab then say how to install it)."""
    if importlib.util.find_spec("av") is None:
        return None
    from ..video.jobs import VideoJobs

    return VideoJobs(service, settings.video_queue_limit(), settings.video_result_seconds())


def add_video_routes(app: FastAPI, service: RemovalService, jobs: VideoJobs | None, token: str | None = None) -> None:
    """Registers the routes over `jobs` (`video_jobs`); like `add_routes`, before Gradio is mounted at '/'."""

    @app.post("/api/video", status_code=202)
    async def submit(request: Request) -> Response:
        return await _answer(_submit(request, service, _available(jobs), token))

    @app.get("/api/video/{job_id}")
    async def status(job_id: str, request: Request) -> Response:
        return await _answer(_status(request, jobs, token, job_id))

    @app.get("/api/video/{job_id}/result")
    async def result(job_id: str, request: Request) -> Response:
        return await _answer(_result(request, jobs, token, job_id))

    @app.delete("/api/video/{job_id}")
    async def delete(job_id: str, request: Request) -> Response:
        return await _answer(_delete(request, jobs, token, job_id))


async def _answer(work) -> Response:
    try:
        return await work
    except ApiError as error:
        return error.response()


def _available(jobs: VideoJobs | None) -> VideoJobs:
    if jobs is None:
        raise ApiError(501, "video needs PyAV, which is not installed: pip install 'bgremover[video]'.")
    return jobs


async def _submit(request: Request, service: RemovalService, jobs: VideoJobs, token: str | None) -> Response:
    check_token(request, token)
    form = await read_form(request, settings.max_video_upload_bytes(), "RMBG_MAX_VIDEO_UPLOAD_MB")
    try:
        upload, removal, fmt, clip = _parsed(form, service)
        source = jobs.upload_path(upload.filename or "clip")
        await run_in_threadpool(_save, upload, source)
    finally:
        await form.close()
    from ..video import SpanError, VideoError, VideoLimitError

    try:
        name = Path(upload.filename or "clip").name
        job = await run_in_threadpool(jobs.submit, source, name, removal, fmt, **clip)
    except SpanError as error:
        raise ApiError(400, str(error)) from error
    except VideoLimitError as error:
        raise ApiError(413, str(error)) from error
    except VideoError as error:
        raise ApiError(415, str(error)) from error
    except Busy as error:
        raise ApiError(503, str(error), {"Retry-After": str(error.retry_after)}) from error
    body = job.as_dict(jobs.keep_seconds)
    return JSONResponse(body, status_code=202, headers={"Location": f"/api/video/{job.id}"})


def _parsed(form: FormData, service: RemovalService):
    """The upload, its options, its container, and its smoothing, quality and in and out points
    (as `VideoJobs.submit` takes them), all checked before any work."""
    from ..video import check_format, default_format
    from ..video.quality import check_quality
    from ..video.smoothing import check_strength

    upload = checked_upload(form, FIELDS, "clip")
    fields = {name: form.get(name) for name in OPTION_FIELDS if name in form}
    try:
        request = build_request(**fields, outputs=PHOTO_ONLY_OUTPUTS)
        request.model = service.pool.canonical(request.model)
        fmt = check_format(str(form.get("format") or default_format(request.options.output)), request.options.output)
        clip = {
            "smoothing": check_strength(parse_number(form.get("smooth"), "smooth", default=0.0)),
            "quality": check_quality(form.get("quality") or "standard"),
            "start": parse_number(form.get("start"), "start", default=0.0, limits=SECONDS),
            "end": parse_number(form.get("end"), "end", default=None, limits=SECONDS),
        }
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    return upload, request, fmt, clip


def _save(upload: UploadFile, target: Path) -> None:
    upload.file.seek(0)
    with open(target, "wb") as file:
        shutil.copyfileobj(upload.file, file, 1024 * 1024)


def _job(jobs: VideoJobs | None, job_id: str):
    jobs = _available(jobs)
    job = jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"no video job {job_id!r}: it never existed, was deleted or has expired.")
    return jobs, job


async def _status(request: Request, jobs: VideoJobs | None, token: str | None, job_id: str) -> Response:
    check_token(request, token)
    jobs, job = _job(jobs, job_id)
    return JSONResponse(job.as_dict(jobs.keep_seconds))


async def _result(request: Request, jobs: VideoJobs | None, token: str | None, job_id: str) -> Response:
    check_token(request, token)
    jobs, job = _job(jobs, job_id)
    if job.status != "done":
        detail = f": {job.error}" if job.error else ""
        raise ApiError(409, f"the job is {job.status}{detail}; its result is there once the status is 'done'.")
    from ..video.jobs import MEDIA_TYPES

    headers = {"Content-Disposition": disposition(job.result_name)}
    return FileResponse(job.target, media_type=MEDIA_TYPES[job.fmt], headers=headers)


async def _delete(request: Request, jobs: VideoJobs | None, token: str | None, job_id: str) -> Response:
    check_token(request, token)
    if not _available(jobs).delete(job_id):
        raise ApiError(404, f"no video job {job_id!r}: it never existed, was deleted or has expired.")
    return JSONResponse({"id": job_id, "status": "deleted"})
