"""Video jobs for servers: a clip is submitted, runs later on one worker thread, and its result is
fetched when done, so no HTTP request stays open for minutes. Shared by the HTTP API and the UI's
Video tab, so both queue behind the same single worker.

A job's files live in a private temporary folder; finished, failed and cancelled jobs expire after
RMBG_VIDEO_RESULT_MINUTES (a sweeper thread removes them then, with or without requests), and
everything left is removed when the process exits: `close`, which the server's stop calls on
every way out (it ends with os._exit, so atexit alone would not run).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import queue
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import estimates
from ..planning import output_name
from ..service.admission import Busy
from ..service.options import RemovalRequest
from ..service.removal import RemovalService
from . import Cancelled, VideoError, check_options
from .quality import check_quality
from .smoothing import check_strength

log = logging.getLogger(__name__)
MEDIA_TYPES = {
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mp4": "video/mp4",
    "zip": "application/zip",
    "webp": "image/webp",
    "gif": "image/gif",
}
_STOP = object()  # put on the queue by `close`: the worker ends


@dataclass
class VideoJob:
    id: str
    name: str
    source: Path
    target: Path
    request: RemovalRequest
    fmt: str
    frames_total: int
    smoothing: float = 0.0
    quality: str = "standard"
    start: float = 0.0
    end: float | None = None
    status: str = "queued"  # queued, running, done, failed, cancelled
    frames_done: int = 0
    error: str | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float | None = None  # time.monotonic() when it began to run
    past_seconds: float | None = None  # per frame in this machine's past runs of its model and size

    @property
    def eta_seconds(self) -> int | None:
        """Seconds until it is done while it runs: from its own frames once one is done, before
        that from past runs here; None while it waits, once it ended, or where nothing is known."""
        if self.status != "running" or self.started is None:
            return None
        total = max(self.frames_total, self.frames_done)
        left = estimates.seconds_left(total, self.frames_done, time.monotonic() - self.started, self.past_seconds)
        return None if left is None else round(left)

    @property
    def result_name(self) -> str:
        return self.target.name

    def as_dict(self, keep_seconds: float) -> dict:
        """The status a client polls; `progress` is 0-1 (the total is the header's estimate)."""
        total = max(self.frames_total, self.frames_done)
        expires = None if self.finished is None else max(0, round(self.finished + keep_seconds - time.time()))
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "frames_done": self.frames_done,
            "frames_total": total,
            "progress": round(self.frames_done / total, 4) if total else 0.0,
            "eta_seconds": self.eta_seconds,
            "error": self.error,
            "format": self.fmt,
            "expires_in_seconds": expires,
        }


class VideoJobs:
    """The queue of video jobs of one service, built once per server by `web.app.create_app`
    (`queue_limit`: RMBG_VIDEO_QUEUE, `keep_seconds`: RMBG_VIDEO_RESULT_MINUTES, read there)."""

    def __init__(self, service: RemovalService, queue_limit: int, keep_seconds: float):
        self.service = service
        self.queue_limit = queue_limit
        self.keep_seconds = keep_seconds
        self.folder = Path(tempfile.mkdtemp(prefix="rmbg-video-"))
        atexit.register(shutil.rmtree, self.folder, True)
        self._jobs: dict[str, VideoJob] = {}
        self._queue: queue.Queue[VideoJob] = queue.Queue()
        self._guard = threading.Lock()
        self._worker: threading.Thread | None = None
        self._counter = itertools.count()
        self._closed = threading.Event()
        threading.Thread(target=self._sweep, name="rmbg-video-expiry", daemon=True).start()

    def upload_path(self, name: str) -> Path:
        """Where a front end puts an uploaded clip before `submit` (its suffix helps FFmpeg probe)."""
        suffix = "".join(c for c in Path(name).suffix[:8] if c.isalnum() or c == ".")
        return self.folder / f"upload-{next(self._counter)}-{secrets.token_hex(4)}{suffix}"

    def submit(
        self,
        source: Path,
        name: str,
        request: RemovalRequest,
        fmt: str,
        smoothing: float = 0.0,
        quality: str = "standard",
        start: float = 0.0,
        end: float | None = None,
    ) -> VideoJob:
        """Checks the clip (readable, within the limits), the format, the smoothing, the quality and
        the in and out points at once, then queues it; raises VideoError, VideoLimitError, ValueError
        or Busy (queue full), and then deletes `source`."""
        try:
            fmt = check_options(fmt, request.options.output, request.options.crop)
            quality, smoothing = check_quality(quality), check_strength(smoothing)
            from .reading import Limits, check_span, probe  # PyAV: with the first clip, not at the server's start

            info = probe(source, name, Limits.from_settings())
            span = check_span(start, end, info.seconds, name)
            job = self._queued(source, name, request, fmt, info.frames, smoothing)
            job.quality, job.start, job.end = quality, span.start, span.end
        except BaseException:
            source.unlink(missing_ok=True)
            raise
        self._queue.put(job)
        return job

    def _queued(
        self, source: Path, name: str, request: RemovalRequest, fmt: str, frames: int, smoothing: float
    ) -> VideoJob:
        self.expire()
        with self._guard:
            active = sum(job.status in ("queued", "running") for job in self._jobs.values())
            if active > self.queue_limit:
                raise Busy(
                    f"{active} video jobs are already running or waiting (RMBG_VIDEO_QUEUE={self.queue_limit} "
                    "may wait behind the running one). Try again later.",
                    retry_after=60,
                )
            job_id = secrets.token_urlsafe(12)
            target = self.folder / job_id / output_name(name, f".{fmt}")  # the name a download gets
            job = VideoJob(job_id, name, source, target, request, fmt, frames, smoothing)
            self._jobs[job_id] = job
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="rmbg-video-jobs", daemon=True)
                self._worker.start()
        return job

    def get(self, job_id: str) -> VideoJob | None:
        self.expire()
        with self._guard:
            return self._jobs.get(job_id)

    def count_by_status(self) -> dict[str, int]:
        """Jobs kept now by status (queued, running, done, failed, cancelled), for /metrics."""
        with self._guard:
            statuses = [job.status for job in self._jobs.values()]
        return {status: statuses.count(status) for status in ("queued", "running", "done", "failed", "cancelled")}

    def delete(self, job_id: str) -> bool:
        """Cancels the job if it runs or waits, and removes it and its files; whether it existed."""
        with self._guard:
            job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancel.set()
        if job.status == "queued":
            job.status = "cancelled"
        self._remove_files(job)
        return True

    def cancel(self, job_id: str) -> None:
        """Stops the job but keeps its status (the UI's Cancel button)."""
        job = self.get(job_id)
        if job is not None:
            job.cancel.set()

    def expire(self) -> None:
        now = time.time()
        with self._guard:
            old = [j for j in self._jobs.values() if j.finished is not None and now - j.finished > self.keep_seconds]
            for job in old:
                del self._jobs[job.id]
        for job in old:
            self._remove_files(job)

    def _sweep(self) -> None:
        """Expires results on time, whether or not requests come: at most a tenth of the keep
        time (10 s at most) after it has passed."""
        while not self._closed.wait(max(0.05, min(10.0, self.keep_seconds / 10))):
            self.expire()

    def close(self, wait: float = 5.0) -> None:
        """Cancels every job, gives the running one up to `wait` seconds to stop writing, and
        removes the folder with every upload and result."""
        self._closed.set()
        with self._guard:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join(wait)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _work(self) -> None:
        while (job := self._queue.get()) is not _STOP:
            if not job.cancel.is_set():
                self._run(job)
            elif job.status == "queued":
                self._end(job, "cancelled")
            job.source.unlink(missing_ok=True)
            if job.id not in self._jobs:  # deleted while it ran
                self._remove_files(job)

    def _run(self, job: VideoJob) -> None:
        from .clip import remove_clip

        job.status, job.started = "running", time.monotonic()

        def progress(done: int, expected: int) -> None:
            job.frames_done, job.frames_total = done, expected

        try:
            job.past_seconds = estimates.past_run(self.service.remover(job.request), "frame")
            remove_clip(
                self.service,
                job.source,
                job.target,
                job.request,
                fmt=job.fmt,
                batch_size=self.service.max_batch if self.service.pool.device.type == "cuda" else 1,
                progress=progress,
                cancel=job.cancel,
                name=job.name,
                smoothing=job.smoothing,
                quality=job.quality,
                start=job.start,
                end=job.end,
            )
        except Cancelled:
            self._end(job, "cancelled")
        except (VideoError, Busy, OSError) as error:
            self._end(job, "failed", str(error))
        except Exception as error:  # a bug or a model that cannot load: the job says so, the server goes on
            log.exception("video job %s (%s) failed", job.id, job.name)
            self._end(job, "failed", f"{type(error).__name__}: {error}")
        else:
            self._end(job, "done")

    @staticmethod
    def _end(job: VideoJob, status: str, error: str | None = None) -> None:
        job.status, job.error, job.finished = status, error, time.time()

    @staticmethod
    def _remove_files(job: VideoJob) -> None:
        if job.status != "running":
            job.source.unlink(missing_ok=True)
            shutil.rmtree(job.target.parent, ignore_errors=True)
