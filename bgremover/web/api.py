"""Plain HTTP routes beside the UI: one image in, one image out, every failure a JSON error with its status.

    POST /api/remove   multipart: file + options as form fields -> image bytes
    GET  /api/models   the zoo: license, gated, cached, loaded
    GET  /health       200 once the default model is loaded, else 503 with the reason

Status codes of /api/remove: 400 bad options or form, 413 upload over RMBG_MAX_UPLOAD_MB,
415 a file that is not a usable image (not an image, empty, truncated, too many pixels),
503 the model cannot be loaded or is still loading (the message says how to fix it), 500 a bug.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .. import imaging
from ..hub import ModelLoadError
from ..pipeline import Options
from .state import ModelNotReady, Registry, parse_size

log = logging.getLogger(__name__)

OUTPUTS = ("cutout", "mask", "color")
FIELDS = ("file", "model", "output", "bg_color", "threshold", "crop", "crop_margin", "refine_edges", "size", "format")
# Room for the multipart boundaries, part headers and option fields around the file itself.
_FORM_OVERHEAD = 64 * 1024
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class ApiError(Exception):
    """A failure the client caused or can wait out: sent as {"error": message} with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status, headers=self.headers)


@dataclass
class Job:
    model: str
    size: int | None
    fmt: str
    options: Options
    filename: str


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The request body, cut off with 413 as soon as it grows past `limit` (a missing or false
    Content-Length must not let a client fill the disk)."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"the upload is larger than the limit of {_megabytes(limit - _FORM_OVERHEAD)}.")
        yield chunk


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:g} MB (RMBG_MAX_UPLOAD_MB)"


async def read_form(request: Request, max_upload: int) -> FormData:
    """The multipart form, refused by its declared length before reading and by its real length while reading."""
    limit = max_upload + _FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, f"the upload is larger than the limit of {_megabytes(max_upload)}.")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send a multipart/form-data request with the image in the field 'file'.")
    parser = MultiPartParser(request.headers, _limited(request.stream(), limit), max_files=1, max_fields=len(FIELDS))
    try:
        return await parser.parse()
    except MultiPartException as error:
        raise ApiError(400, f"malformed form: {error.message}") from error


def _flag(form: FormData, field: str) -> bool:
    value = str(form.get(field, "")).strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"{field}={value!r}: use true or false.")


def _number(form: FormData, field: str, kind: type, default: float | None) -> float | None:
    value = str(form.get(field, "")).strip()
    if value.lower() in ("", "none"):
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{field}={value!r} is not a{'n integer' if kind is int else ' number'}.") from None


def parse_job(form: FormData, registry: Registry) -> Job:
    """Every option checked before any work, so a typo costs the client a 400, not an inference."""
    unknown = sorted(set(form.keys()) - set(FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}: use {', '.join(FIELDS)}.")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "no image: send it as a file in the multipart field 'file'.")
    output = str(form.get("output", "cutout")).strip().lower()
    try:
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}: use {', '.join(OUTPUTS)}.")
        fmt = imaging.output_format(str(form.get("format", "png")), transparent=output == "cutout")
        options = Options(
            output=output,
            background_color=imaging.parse_color(str(form.get("bg_color", "#ffffff"))),
            threshold=_number(form, "threshold", float, None),
            crop=_flag(form, "crop"),
            crop_margin=int(_number(form, "crop_margin", int, 0)),
            refine_edges=_flag(form, "refine_edges"),
        )
        model = registry.canonical(str(form.get("model", "")))
        size = parse_size(form.get("size"))
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    return Job(model, size, fmt, options, Path(upload.filename or "image").name)


def process(registry: Registry, job: Job, data: bytes) -> tuple[bytes, float]:
    """Decode, infer (one inference on the device at a time), encode; runs in a worker thread."""
    try:
        decoded = imaging.decode(data, name=job.filename, max_pixels=registry.max_pixels)
    except imaging.ImageError as error:
        raise ApiError(415, str(error)) from error
    try:
        remover = registry.get(job.model, job.size, wait=False)
    except ModelNotReady as error:
        raise ApiError(503, str(error), {"Retry-After": "10"}) from error
    except ModelLoadError as error:
        raise ApiError(503, str(error)) from error
    started = time.perf_counter()
    with registry.inference_lock:
        result = remover.process([decoded], job.options)[0]
    seconds = time.perf_counter() - started
    return imaging.encode(result.image, job.fmt, result.icc_profile), seconds


def _disposition(name: str) -> str:
    """Headers are Latin-1: an ASCII fallback name, and the real one percent-encoded (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


def add_routes(app: FastAPI, registry: Registry, max_upload: int) -> None:
    """Registers the API on `app`; call before mounting Gradio at '/', which would shadow later routes."""

    @app.post("/api/remove")
    async def remove(request: Request) -> Response:
        try:
            form = await read_form(request, max_upload)
            try:
                job = parse_job(form, registry)
                data = await form["file"].read()
            finally:
                await form.close()
            body, seconds = await run_in_threadpool(process, registry, job, data)
        except ApiError as error:
            return error.response()
        except Exception:
            log.exception("POST /api/remove failed")
            return ApiError(500, "unexpected server error; the server log has the details.").response()
        extension = "jpg" if job.fmt == "jpeg" else job.fmt
        headers = {
            "Content-Disposition": _disposition(f"{Path(job.filename).stem}_nobg.{extension}"),
            "X-Model": job.model,
            "X-Inference-Seconds": f"{seconds:.3f}",
        }
        return Response(body, media_type=f"image/{job.fmt}", headers=headers)

    @app.get("/api/models")
    def models() -> JSONResponse:
        rows = registry.models()
        return JSONResponse({"default_model": registry.default_model, "device": str(registry.device), "models": rows})

    @app.get("/health")
    def health() -> JSONResponse:
        ready, body = registry.health()
        return JSONResponse(body, status_code=200 if ready else 503)
