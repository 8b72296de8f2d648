"""`POST /v1.0/removebg`: remove.bg's API v1.0 over this server's removal service, so that a client
written for remove.bg works by changing only its base URL.

The image comes as `image_file` (multipart), `image_file_b64` or `image_url`, in a multipart,
urlencoded or JSON body; the key as `X-Api-Key` (or `Authorization: Bearer`), checked against
RMBG_API_TOKEN when one is set. The answer is the image, or with `Accept: application/json`
`{"data": {"result_b64": ..., "foreground_top": ...}}`, with remove.bg's headers; every failure is
remove.bg's envelope `{"errors": [{"title", "code", "detail"}]}` with 400, 403 or 429 (503 only
where the model cannot be loaded). docs/web.md has the table of every field and header.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile

from .. import settings
from ..hub import ModelLoadError
from ..imaging.decoding import ImageError
from ..service.admission import BUDGET_BYTES_PER_PIXEL, Busy
from ..service.options import build_request
from ..service.pool import ModelNotReady
from ..service.removal import RemovalService
from .api import ApiError, read_form
from .fetching import FetchError, FetchLimits, fetch
from .removebg_errors import RemoveBgError, auth_failed, invalid
from .removebg_options import NoForeground, RemoveBgOptions, Shaped, parse_options, shape

PATH = "/v1.0/removebg"
SOURCES = ("image_file", "image_file_b64", "image_url")
OPTION_FIELDS = (
    "size",
    "type",
    "type_level",
    "format",
    "roi",
    "crop",
    "crop_margin",
    "scale",
    "position",
    "channels",
    "add_shadow",
    "semitransparency",
    "bg_color",
    "bg_image_url",
)
FIELDS = (*SOURCES, "bg_image_file", *OPTION_FIELDS)
X_TYPE = "other"  # remove.bg names the subject it found; this server does not classify, unless told `type`
_BODY_OVERHEAD = 64 * 1024
# What shaping holds per pixel of the photo (RGB 3, mask 1, cut-out 4, backdrop 4, copies and the
# encoder's buffers): an estimate from those sizes, not a measurement.
SHAPE_BYTES_PER_PIXEL = 24


def check_key(request: Request, token: str | None) -> None:
    """With RMBG_API_TOKEN set, `X-Api-Key: <token>` or `Authorization: Bearer <token>` (403 otherwise)."""
    if token is None:
        return
    key = request.headers.get("x-api-key", "")
    bearer = request.headers.get("authorization", "")
    if not (
        secrets.compare_digest(key.encode(), token.encode())
        or secrets.compare_digest(bearer.encode(), f"Bearer {token}".encode())
    ):
        raise auth_failed("wrong or missing API key: send the header 'X-Api-Key: <RMBG_API_TOKEN>'.")


@dataclass
class Inputs:
    """The request's text fields and file contents, read from whichever body it came in."""

    fields: dict[str, str]
    files: dict[str, bytes]


async def read_inputs(request: Request, max_upload: int) -> Inputs:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _multipart(request, max_upload)
    if kind not in ("application/x-www-form-urlencoded", "application/json"):
        raise invalid("send a multipart/form-data, application/x-www-form-urlencoded or application/json body.")
    body = await _body(request, math.ceil(max_upload * 4 / 3) + _BODY_OVERHEAD)
    if kind == "application/json":
        try:
            values = json.loads(body or b"{}")
        except ValueError as error:
            raise invalid(f"the body is not JSON: {error}.") from error
        if not isinstance(values, dict):
            raise invalid("the JSON body must be an object of fields.")
    else:
        try:
            values = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=len(FIELDS)))
        except ValueError as error:
            raise invalid(f"malformed form: {error}.") from error
    pairs = {key: value for key, value in values.items() if value is not None}
    return Inputs(_checked_fields(pairs), {})


async def _multipart(request: Request, max_upload: int) -> Inputs:
    try:
        form = await read_form(request, max_upload, max_files=2, max_fields=len(FIELDS))
    except ApiError as error:
        code = "file_too_large" if error.status == 413 else "invalid_parameters"
        raise invalid(error.message, code) from error
    try:
        files = {name: await value.read() for name, value in form.items() if isinstance(value, UploadFile)}
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
    finally:
        await form.close()
    unknown = sorted(set(files) - {"image_file", "bg_image_file"})
    if unknown:
        raise invalid(f"file field(s) {', '.join(unknown)} unknown: files go in image_file and bg_image_file.")
    return Inputs(_checked_fields(fields), files)


def _checked_fields(values: dict) -> dict[str, str]:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise invalid(f"unknown field(s) {', '.join(map(str, unknown))}: use {', '.join(FIELDS)}.")
    as_text = sorted({"image_file", "bg_image_file"} & set(values))
    if as_text:
        raise invalid(f"{', '.join(as_text)} must be a file in a multipart body (base64 goes in image_file_b64).")
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in values.items()}


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    too_large = invalid(
        f"the body is larger than the limit of {limit / 1024 / 1024:.1f} MB (RMBG_MAX_UPLOAD_MB, base64 included).",
        "file_too_large",
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _fetch_limits(max_upload: int) -> FetchLimits:
    return FetchLimits(max_upload, settings.url_timeout_seconds(), settings.allow_private_urls())


def image_bytes(inputs: Inputs, max_upload: int) -> bytes:
    """The one image source given (blocking: an `image_url` is fetched here)."""
    given = [name for name in SOURCES if inputs.files.get(name) or inputs.fields.get(name, "").strip()]
    if len(given) != 1:
        what = "no image" if not given else f"more than one image source ({', '.join(given)})"
        raise invalid(f"{what}: send exactly one of image_file, image_file_b64 or image_url.", "missing_source")
    if given[0] == "image_file":
        return inputs.files["image_file"]
    if given[0] == "image_file_b64":
        text = "".join(inputs.fields["image_file_b64"].split())
        text = text.split(",", 1)[1] if text.startswith("data:") else text  # a data: URL's payload
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise invalid(f"image_file_b64 is not valid base64 ({error}).", "invalid_file_b64") from error
    return fetch(inputs.fields["image_url"].strip(), _fetch_limits(max_upload))


def background(inputs: Inputs, max_upload: int) -> Image.Image | None:
    """bg_image_file or bg_image_url, decoded (blocking); None where neither is given."""
    data = inputs.files.get("bg_image_file")
    url = inputs.fields.get("bg_image_url", "").strip()
    if data and url:
        raise invalid("send bg_image_file or bg_image_url, not both.")
    if url:
        data = fetch(url, _fetch_limits(max_upload))
    if not data:
        return None
    from ..imaging.decoding import decode

    return decode(data, name="bg_image", max_pixels=settings.max_pixels()).rgb


def rate_limit_headers(service: RemovalService, retry_after: int | None = None) -> dict[str, str]:
    """remove.bg's X-RateLimit-* from admission: the requests it takes (running plus waiting), the room
    left now, and when (Unix seconds) to try again; Retry-After where it is full."""
    admission = service.admission
    if admission is None:
        return {}
    limit = admission.workers + admission.max_waiting
    running, waiting = admission.load()
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, limit - running - waiting)),
        "X-RateLimit-Reset": str(int(time.time()) + (retry_after or 1)),
    }
    return headers | ({"Retry-After": str(retry_after)} if retry_after else {})


def _admitted(service: RemovalService, pixels: int) -> AbstractContextManager:
    """Shaping holds full-size copies (the photo, its mask, the cut-out, a backdrop, the encoder's
    buffers) after the removal has left admission, so it is admitted again, counted at an estimated
    SHAPE_BYTES_PER_PIXEL, to keep the server's memory within RMBG_PIXEL_BUDGET_MP."""
    if service.admission is None:
        return nullcontext()
    return service.admission.admit(-(-pixels * SHAPE_BYTES_PER_PIXEL // BUDGET_BYTES_PER_PIXEL))


def process(service: RemovalService, inputs: Inputs, options: RemoveBgOptions, max_upload: int) -> Shaped:
    """Fetch or decode, cut out with the service's default model, shape as remove.bg does (worker thread)."""
    try:
        data = image_bytes(inputs, max_upload)
        backdrop = background(inputs, max_upload)
        request = build_request(output="mask", fmt="png")
        removal = service.remove(data, request, name="image", wait=False)
        with _admitted(service, removal.original.width * removal.original.height):
            return shape(removal.original, removal.result.mask, options, backdrop, removal.result.icc_profile)
    except FetchError as error:
        raise invalid(str(error), error.code) from error
    except NoForeground as error:
        raise RemoveBgError(400, "Could not identify foreground in image", "unknown_foreground", str(error)) from error
    except ImageError as error:
        raise invalid(str(error), "invalid_image") from error
    except ValueError as error:  # roi outside the image
        raise invalid(str(error)) from error
    except ModelNotReady as error:
        raise RemoveBgError(429, "Rate limit exceeded", "model_loading", str(error), {"Retry-After": "10"}) from error
    except Busy as error:
        headers = rate_limit_headers(service, error.retry_after)
        raise RemoveBgError(429, "Rate limit exceeded", "rate_limit_exceeded", str(error), headers) from error
    except ModelLoadError as error:
        raise RemoveBgError(503, "Service unavailable", "model_unavailable", str(error)) from error


def answer(request: Request, shaped: Shaped, options: RemoveBgOptions, headers: dict[str, str]) -> Response:
    top, left, width, height = shaped.foreground
    headers = headers | {
        "X-Width": str(shaped.size[0]),
        "X-Height": str(shaped.size[1]),
        "X-Type": options.type if options.type != "auto" else X_TYPE,
        "X-Credits-Charged": "0",
        "X-Foreground-Top": str(top),
        "X-Foreground-Left": str(left),
        "X-Foreground-Width": str(width),
        "X-Foreground-Height": str(height),
    }
    if "application/json" in request.headers.get("accept", ""):
        data = {
            "result_b64": base64.b64encode(shaped.data).decode(),
            "foreground_top": top,
            "foreground_left": left,
            "foreground_width": width,
            "foreground_height": height,
        }
        return JSONResponse({"data": data}, headers=headers)
    return Response(shaped.data, media_type=shaped.media_type, headers=headers)


def add_removebg_route(app: FastAPI, service: RemovalService, max_upload: int, token: str | None) -> None:
    """Registers POST /v1.0/removebg on `app` (before Gradio is mounted at '/')."""

    @app.post(PATH)
    async def removebg(request: Request) -> Response:
        try:
            check_key(request, token)
            inputs = await read_inputs(request, max_upload)
            options = parse_options(inputs.fields)
            shaped = await run_in_threadpool(process, service, inputs, options, max_upload)
            return answer(request, shaped, options, rate_limit_headers(service))
        except RemoveBgError as error:
            return error.response()
        except ValueError as error:  # a field's value (parse_options)
            return invalid(str(error)).response()

    def not_allowed(request: Request) -> JSONResponse:
        detail = f"{request.method} {PATH} is not supported: use POST (docs/web.md)."
        error = RemoveBgError(405, "Method not allowed", "method_not_allowed", detail, {"Allow": "POST"})
        return error.response()

    app.add_api_route(PATH, not_allowed, methods=["GET", "HEAD", "PUT", "PATCH", "DELETE"], include_in_schema=False)
