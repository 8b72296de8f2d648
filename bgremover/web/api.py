"""Plain HTTP routes beside the UI: one image in, one image out, every failure a JSON error with its status.

    POST /api/remove   multipart: file + options as form fields -> image bytes
    GET  /api/models   the zoo: license, gated, cached, loaded
    GET  /health       200 once the default model is loaded, else 503 with the reason; `ui`: the page's state
    GET  /livez        200 while the process answers (no checks)
    GET  /readyz       200 while the default model is loaded and the server is not draining, else 503

Status codes of /api/remove: 400 bad options or form, 408 a body that stopped arriving (deadlines.py),
413 upload over RMBG_MAX_UPLOAD_MB, 415 a file that is not a usable image (not an image, empty,
truncated, too many pixels), 503 the model cannot be loaded or is still loading (the message says
how to fix it), or the server is busy or stopping, 500 a bug.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..choices import PHOTO_ONLY_OUTPUTS
from ..hub import ModelLoadError
from ..imaging.decoding import ImageError
from ..imaging.encoding import file_suffix
from ..planning import output_name
from ..service.admission import Busy, give_back_memory
from ..service.options import RemovalRequest, build_request
from ..service.pool import ModelNotReady
from ..service.removal import Removal, RemovalService

log = logging.getLogger(__name__)

OPTION_FIELDS = (
    "output",
    "bg_color",
    "threshold",
    "crop",
    "crop_margin",
    "refine_edges",
    "size",
    "model",
    "compression",
    "keep_hidden_color",
)
FIELDS = ("file", *OPTION_FIELDS, "format")
# Room for the multipart boundaries, part headers and option fields around the file itself.
_FORM_OVERHEAD = 64 * 1024
_GIVE_BACK = BackgroundTask(give_back_memory)
# The methods a client may send to an API route by mistake (HEAD of a GET route stays as it is).
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
PROBES = ("/health", "/livez", "/readyz")  # open to all, as load balancers and orchestrators call them


class ApiError(Exception):
    """A failure the client caused or can wait out: sent as {"error": message} with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status, headers=self.headers)


@dataclass
class NamedRequest:
    """A removal request read from the form, with the uploaded file's name (its output is named after it)."""

    request: RemovalRequest
    filename: str


async def _limited(stream: AsyncIterator[bytes], limit: int, setting: str) -> AsyncIterator[bytes]:
    """The request body, cut off with 413 as soon as it grows past `limit` (a missing or false
    Content-Length must not let a client fill the disk)."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise ApiError(
                413, f"the upload is larger than the limit of {_megabytes(limit - _FORM_OVERHEAD, setting)}."
            )
        yield chunk


def _megabytes(size: int, setting: str) -> str:
    return f"{size / 1024 / 1024:g} MB ({setting})"


async def read_form(
    request: Request, max_upload: int, setting: str = "RMBG_MAX_UPLOAD_MB", max_files: int = 1, max_fields: int = 0
) -> FormData:
    """The multipart form, refused by its declared length before reading and by its real length while
    reading; `setting` is the variable that sets `max_upload`, named in the refusal so it can be raised.
    `max_files` and `max_fields` (0: this API's fields) bound the parts."""
    limit = max_upload + _FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, f"the upload is larger than the limit of {_megabytes(max_upload, setting)}.")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send a multipart/form-data request with the image in the field 'file'.")
    parser = MultiPartParser(
        request.headers,
        _limited(request.stream(), limit, setting),
        max_files=max_files,
        max_fields=max_fields or len(FIELDS),
    )
    try:
        return await parser.parse()
    except MultiPartException as error:
        raise ApiError(400, f"malformed form: {error.message}") from error
    except ClientDisconnect as error:  # gone, or too slow (deadlines.py): nobody to tell more
        raise ApiError(400, "the upload stopped before its end.") from error


def checked_upload(form: FormData, fields: tuple[str, ...], what: str) -> UploadFile:
    """The form's file, once no field is unknown: a typo costs the client a 400, not a run."""
    unknown = sorted(set(form.keys()) - set(fields))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}: use {', '.join(fields)}.")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, f"no {what}: send it as a file in the multipart field 'file'.")
    return upload


def parse_form(form: FormData, service: RemovalService) -> NamedRequest:
    """Every option checked before any work, so a typo costs the client a 400, not an inference."""
    upload = checked_upload(form, FIELDS, "image")
    fields = {name: form.get(name) for name in OPTION_FIELDS if name in form}
    try:
        request = build_request(**fields, fmt=str(form.get("format", "png")), outputs=PHOTO_ONLY_OUTPUTS)
        request.model = service.pool.canonical(request.model)
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    return NamedRequest(request, Path(upload.filename or "image").name)


def process(service: RemovalService, named: NamedRequest, data: bytes) -> Removal:
    """The removal use case in a worker thread, its failures as the statuses the API documents."""
    try:
        return service.remove(data, named.request, name=named.filename, wait=False)
    except ImageError as error:
        raise ApiError(415, str(error)) from error
    except ModelNotReady as error:
        raise ApiError(503, str(error), {"Retry-After": "10"}) from error
    except Busy as error:
        raise ApiError(503, str(error), {"Retry-After": str(error.retry_after)}) from error
    except ModelLoadError as error:
        raise ApiError(503, str(error)) from error


def disposition(name: str) -> str:
    """Headers are Latin-1: an ASCII fallback name, and the real one percent-encoded (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


def check_token(request: Request, token: str | None) -> None:
    """With RMBG_API_TOKEN set, /api/ routes need `Authorization: Bearer <token>` (401 otherwise)."""
    if token is None:
        return
    sent = request.headers.get("authorization", "")
    if not secrets.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise ApiError(401, "this server needs an API token: send the header 'Authorization: Bearer <token>'.")


def add_routes(app: FastAPI, service: RemovalService, max_upload: int, token: str | None = None) -> None:
    """Registers the API on `app`; call before mounting Gradio at '/', which would shadow later routes.

    `token` protects /api/remove and /api/models; the PROBES stay open for load balancers and Docker.
    """

    @app.post("/api/remove")
    async def remove(request: Request) -> Response:
        try:
            check_token(request, token)
            form = await read_form(request, max_upload)
            try:
                named = parse_form(form, service)
                data = await form["file"].read()
            finally:
                await form.close()
            removal = await run_in_threadpool(process, service, named, data)
        except ApiError as error:
            return error.response()
        except Exception:
            log.exception("POST /api/remove failed")
            return ApiError(500, "unexpected server error; the server log has the details.").response()
        fmt = named.request.fmt
        headers = {
            "Content-Disposition": disposition(output_name(named.filename, file_suffix(fmt))),
            "X-Model": named.request.model,
            "X-Queue-Seconds": f"{removal.timings.queue:.3f}",
            "X-Inference-Seconds": f"{removal.timings.infer:.3f}",
            "X-Batch-Size": str(removal.batch),
        }
        # Once the response is out, the request's images are garbage: hand their memory back to the OS.
        return Response(removal.data, media_type=f"image/{fmt}", headers=headers, background=_GIVE_BACK)

    @app.get("/api/models")
    def models(request: Request) -> JSONResponse:
        try:
            check_token(request, token)
        except ApiError as error:
            return error.response()
        pool = service.pool
        return JSONResponse({"default_model": pool.default_model, "device": str(pool.device), "models": pool.models()})

    @app.get("/health")
    def health(request: Request) -> JSONResponse:
        ready, body = readiness(service)
        ui = getattr(request.app.state, "ui", None)  # the web page, built after the API answers (late_ui.py)
        return JSONResponse(body if ui is None else {**body, "ui": ui.state}, status_code=200 if ready else 503)

    @app.get("/livez")
    def livez() -> JSONResponse:
        """No checks: the process answers HTTP (a restart is the fix only when even this fails)."""
        return JSONResponse({"status": "alive"})

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 only while the default model is loaded and the server is not draining: send it work."""
        ready, body = readiness(service)
        return JSONResponse({"status": body["status"]}, status_code=200 if ready else 503)

    for path, allowed in (("/api/remove", "POST"), ("/api/models", "GET"), *((p, "GET") for p in PROBES)):
        _refuse_other_methods(app, path, allowed)


def readiness(service: RemovalService) -> tuple[bool, dict]:
    """Whether the server takes work (the default model loaded, not draining), and /health's body."""
    ready, body = service.pool.health()
    if service.admission is not None and service.admission.draining:
        ready, body = False, {**body, "status": "draining", "reason": "the server is shutting down."}
    return ready, body


def _refuse_other_methods(app: FastAPI, path: str, allowed: str) -> None:
    """Another method on an API route is 405 with `Allow`, as HTTP asks: without this it would fall
    through to the UI mounted at '/', whose 404 says the route does not exist."""

    def not_allowed(request: Request) -> JSONResponse:
        message = f"{request.method} {path} is not supported: use {allowed} (docs/web.md)."
        return ApiError(405, message, {"Allow": allowed}).response()

    others = [method for method in _METHODS if method != allowed and (allowed, method) != ("GET", "HEAD")]
    app.add_api_route(path, not_allowed, methods=others, include_in_schema=False)
