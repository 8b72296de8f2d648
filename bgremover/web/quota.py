"""The UI's uploads: RMBG_UPLOAD_QUOTA_MB across all uploads at once, counted as the bytes arrive,
RMBG_UPLOAD_MAX_FILES per request, and only file parts named `files`.

Gradio's `/upload` route writes each file into its upload folder as it streams in and takes up
to 1000 files per request, and a check of the folder before a request starts lets 30 concurrent
uploads (or one request of 5 × 40 MB) all pass. So every chunk of an upload's body is charged
here, against one counter shared by the requests in flight, before Gradio sees it; the chunk
that would go past the quota ends the upload, and Gradio deletes what it had written.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import JSONResponse
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FULL = "the server's upload space is full (RMBG_UPLOAD_QUOTA_MB); try again later."
MAX_PART_HEADERS = 8 * 1024
REMEASURE_SECONDS = 30.0  # how stale the folder's measured size may get while uploads never stop


class UploadRefused(MultiPartException):
    """Raised into Gradio's multipart parser, which deletes the part-written files on this error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class PartScanner:
    """The part headers of a multipart body as it streams, for checks before Gradio writes any file.

    A part starts after `CRLF--boundary` (the body is read as if a CRLF came first, so the opening
    delimiter matches too) and its headers end at a blank line; either may be split across chunks,
    so the unfinished rest of a chunk waits for the next one (bounded: Gradio allows 8 KB of headers).
    """

    delimiter: bytes
    buffer: bytes = b"\r\n"
    parts: int = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The header blocks that `chunk` completes."""
        self.buffer += chunk
        blocks = []
        while (start := self.buffer.find(self.delimiter)) >= 0:
            rest = start + len(self.delimiter)
            if self.buffer[rest : rest + 2] == b"--":  # the closing delimiter: no more parts
                self.buffer = b""
                return blocks
            end = self.buffer.find(b"\r\n\r\n", rest)
            if end < 0:
                if len(self.buffer) - start > MAX_PART_HEADERS:
                    raise UploadRefused(400, "malformed upload: a part's headers are over 8 KB.")
                self.buffer = self.buffer[start:]
                return blocks
            blocks.append(self.buffer[rest:end].lstrip(b" \t\r\n"))  # the rest of the delimiter's line
            self.parts += 1
            self.buffer = self.buffer[end + 4 :]
        self.buffer = self.buffer[-(len(self.delimiter) - 1) :]  # a delimiter may begin at the end
        return blocks


def is_file_part(headers: bytes) -> bool:
    """Whether a part's headers make it what Gradio's /upload takes: a file in the field `files`.
    (A text field `files` makes Gradio fail with a 500; a file under another name stays behind in
    the upload folder as a temporary file that nothing deletes.)"""
    for line in headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-disposition":
            _, options = parse_options_header(value.strip())
            return options.get(b"name") == b"files" and b"filename" in options
    return False


class UploadQuota:
    """Refuses UI uploads (503, Retry-After) that would take the upload folder past `quota` bytes (at
    once where the declared Content-Length says so), and (413) ones with more than `max_files`
    parts; Gradio deletes the files there after an hour.

    The bytes of uploads in flight are reserved as they arrive; those of finished uploads stay
    charged until the folder is measured again, which happens when none is in flight (or every
    REMEASURE_SECONDS), so the count never misses a file and forgets the expired ones.
    """

    def __init__(self, app: ASGIApp, folder: Path, quota: int, max_files: int):
        self.app, self.folder, self.quota, self.max_files = app, folder, quota, max_files
        self.in_flight = self.reserved = self.stored = 0
        self.measured_at = -REMEASURE_SECONDS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/upload"):
            await self.app(scope, receive, send)
            return
        self._remeasure()
        declared = Headers(scope=scope).get("content-length", "")
        if self.stored + self.reserved + (int(declared) if declared.isdigit() else 0) > self.quota:
            await _answer(scope, receive, send, UploadRefused(503, FULL))
            return
        upload = _Upload(self, Headers(scope=scope))
        self.in_flight += 1
        try:
            await self.app(scope, upload.receive(receive), upload.send(send))
        finally:
            self.in_flight -= 1
            self.reserved -= upload.charged
            self.stored += 0 if upload.refused else upload.charged  # on disk now, until measured again
        if upload.refused:
            await _answer(scope, receive, send, upload.refused)

    def charge(self, size: int) -> None:
        if self.stored + self.reserved + size > self.quota:
            raise UploadRefused(503, FULL)
        self.reserved += size

    def _remeasure(self) -> None:
        now = time.monotonic()
        if self.in_flight == 0 or now - self.measured_at > REMEASURE_SECONDS:
            # With uploads in flight their part-written files are counted twice: briefly too strict.
            self.stored, self.measured_at = self._folder_size(), now

    def _folder_size(self) -> int:
        if not self.folder.is_dir():
            return 0
        return sum(path.stat().st_size for path in self.folder.rglob("*") if path.is_file())


class _Upload:
    """One upload request: what it has been charged, its parts so far, and why it was refused."""

    def __init__(self, quota: UploadQuota, headers: Headers):
        self.quota, self.charged, self.refused = quota, 0, None
        _, options = parse_options_header(headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        self.parts = PartScanner(b"\r\n--" + boundary) if boundary else None

    def receive(self, receive: Receive) -> Receive:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                try:
                    self._take(message.get("body", b""))
                except UploadRefused as refusal:
                    self.refused = refusal
                    raise
            return message

        return counted

    def send(self, send: Send) -> Send:
        async def unless_refused(message: Message) -> None:
            if self.refused is None:  # once refused, our answer replaces Gradio's 400
                await send(message)

        return unless_refused

    def _take(self, chunk: bytes) -> None:
        if self.parts is not None:
            for headers in self.parts.feed(chunk):
                if not is_file_part(headers):
                    raise UploadRefused(400, "malformed upload: send each file as a file part named 'files'.")
            if self.parts.parts > self.quota.max_files:
                limit = self.quota.max_files
                raise UploadRefused(413, f"too many files in one upload: at most {limit} (RMBG_UPLOAD_MAX_FILES).")
        self.quota.charge(len(chunk))
        self.charged += len(chunk)


async def _answer(scope: Scope, receive: Receive, send: Send, refusal: UploadRefused) -> None:
    headers = {"Retry-After": "60"} if refusal.status == 503 else None
    response = JSONResponse({"error": refusal.message}, status_code=refusal.status, headers=headers)
    await response(scope, receive, send)


def upload_folder() -> Path:
    """Where Gradio keeps uploads (its `gradio.utils.get_upload_folder`, asked without importing
    Gradio, which the server does only after it answers: late_ui.py)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or (Path(tempfile.gettempdir()) / "gradio").resolve())
