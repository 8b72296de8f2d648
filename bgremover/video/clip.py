"""One clip through the service: decode -> batches of frames -> infer -> finish -> encode, as a
pipeline of threads joined by bounded queues.

A reader thread decodes ahead, the calling thread infers batch after batch (the engine's device
lock, and the service's admission where it has one), worker threads finish frames (the same
`results.finish` as images) and a writer thread encodes them in order. The queues hold a few
batches at most, so memory depends on the frame size and the batch size, never on the clip's
length. The output appears only when complete: it is written under a temporary name and renamed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
from PIL import Image

from .. import estimates, settings
from ..imaging.decoding import Decoded
from ..pipeline import Remover
from ..results import Timings, finish
from ..service.admission import Busy
from ..service.options import RemovalRequest
from ..service.removal import RemovalService
from . import Cancelled, VideoError, check_options
from .quality import check_quality
from .reading import ClipInfo, Frame, Limits, Span, check_span, open_clip, units
from .smoothing import MaskSmoother
from .writing import open_writer

_END = object()
Progress = Callable[[int, int], None]  # (frames done, frames expected: 0 when unknown)


@dataclass
class ClipReport:
    """What a clip cost: frames written and the seconds of work per stage (summed over threads)."""

    frames: int = 0
    seconds: float = 0.0
    timings: Timings = field(default_factory=Timings)


@dataclass
class _Clip:
    """What the threads of one clip share. `cancel` is set by the caller or by the first failure,
    which `error` keeps."""

    service: RemovalService
    remover: Remover
    request: RemovalRequest
    info: ClipInfo
    limits: Limits
    batch_size: int
    cancel: threading.Event
    smoother: MaskSmoother | None = None
    span: Span = field(default_factory=Span)
    report: ClipReport = field(default_factory=ClipReport)
    error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.cancel.set()


def remove_clip(
    service: RemovalService,
    source: Path,
    target: Path,
    request: RemovalRequest,
    *,
    fmt: str,
    batch_size: int = 1,
    limits: Limits | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    name: str | None = None,
    smoothing: float = 0.0,
    quality: str = "standard",
    start: float = 0.0,
    end: float | None = None,
) -> ClipReport:
    """Writes `target` from the clip at `source`; raises VideoError (bad input or limits), Cancelled,
    or the model's errors, and then leaves nothing at `target`. Setting `cancel` stops it (a failure
    sets it too); `smoothing` (0-1, off at 0) blends each mask with the previous frame's carried
    along the motion (`smoothing.MaskSmoother`); `quality` is the encoder preset (`quality.QUALITIES`);
    `start` and `end` (seconds; end None: to the clip's end) keep only that part, moved to start at 0."""
    name = name or source.name
    fmt = check_options(fmt, request.options.output, request.options.crop)
    quality = check_quality(quality)
    smoother = MaskSmoother(smoothing) if smoothing else None
    remover = service.remover(request)
    limits = limits or Limits.from_settings()
    container, info = open_clip(source, name, limits)
    try:
        span = check_span(start, end, info.seconds, info.name)
    except VideoError:
        container.close()
        raise
    info.timecode = span.timecode(info.timecode, info.rate)
    if start or end is not None:  # the progress bar's estimate
        info.frames = int(((min(end, info.seconds) if end is not None else info.seconds) - start) * info.rate)
    clip = _Clip(
        service, remover, request, info, limits, max(batch_size, 1), cancel or threading.Event(), smoother, span
    )
    partial = target.with_name(f".{target.stem}.partial.{fmt}")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        audio = list(container.streams.audio)
        writer = open_writer(partial, fmt, info, request.options.output == "cutout", audio, quality)
        try:
            _run(clip, container, writer, progress)
        except BaseException:
            writer.abandon()
            raise
        writer.close()
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        container.close()
    clip.report.seconds = time.perf_counter() - started
    if clip.report.frames:  # per frame, less the waits for a server's admission
        work = (clip.report.seconds - clip.report.timings.queue) / clip.report.frames
        estimates.record(remover.info.name, remover.device, remover.inference_size, work, "frame")
    return clip.report


def _run(clip: _Clip, container: av.container.InputContainer, writer, progress: Progress | None) -> None:
    """The four stages; the first failure (or a cancel) stops them all and is raised here."""
    threads = clip.service.io_threads or settings.io_threads()
    decoded: queue.Queue = queue.Queue(maxsize=2 * clip.batch_size)
    finished: queue.Queue = queue.Queue(maxsize=clip.batch_size + threads)
    reader = threading.Thread(target=_read, args=(clip, container, decoded), name="rmbg-video-read")
    writing = threading.Thread(target=_write, args=(clip, writer, finished, progress), name="rmbg-video-write")
    reader.start()
    writing.start()
    completed = False
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="rmbg-video-finish") as workers:
            completed = _infer(clip, decoded, finished, workers)
    except BaseException as error:
        clip.fail(error)
    _put(finished, _END, clip, final=True)
    writing.join()
    clip.cancel.set()  # the reader may still be decoding after a failure further on
    _drain(decoded)
    reader.join()
    if clip.error is not None:
        raise clip.error
    if not completed:
        raise Cancelled(f"{clip.info.name}: cancelled; no output was written.")


def _read(clip: _Clip, container: av.container.InputContainer, decoded: queue.Queue) -> None:
    try:
        stream = units(container, clip.info, clip.limits, clip.span)
        while not clip.cancel.is_set():
            with clip.report.timings.stage("decode"):
                unit = next(stream, _END)
            if not _put(decoded, unit, clip) or unit is _END:
                return
    except BaseException as error:
        clip.fail(error)


def _infer(clip: _Clip, decoded: queue.Queue, finished: queue.Queue, workers: ThreadPoolExecutor) -> bool:
    """Gathers a batch of frames (and the audio between them), infers it, and hands the frames to
    the finishing threads and everything, in order, to the writer; whether the clip's end was reached."""
    pending: list = []
    frames: list[Frame] = []
    while (unit := _get(decoded, clip)) is not _END:
        pending.append(unit)
        if isinstance(unit, Frame):
            frames.append(unit)
        if len(frames) == clip.batch_size:
            _dispatch(clip, pending, frames, finished, workers)
            pending, frames = [], []
    if clip.cancel.is_set():
        return False
    _dispatch(clip, pending, frames, finished, workers)
    return not clip.cancel.is_set()


def _dispatch(clip: _Clip, pending: list, frames: list[Frame], finished: queue.Queue, workers) -> None:
    masks = _predict(clip, frames) if frames else []
    if clip.smoother is not None:  # here, in frame order, before the masks go to threads
        masks = [clip.smoother(mask, frame.rgb) for frame, mask in zip(frames, masks, strict=True)]
    jobs = iter([workers.submit(_finish, clip, frame, mask) for frame, mask in zip(frames, masks, strict=True)])
    for unit in pending:
        _put(finished, next(jobs) if isinstance(unit, Frame) else unit, clip)


def _predict(clip: _Clip, frames: list[Frame]) -> list[Image.Image]:
    """Masks for one batch, admitted like any request where the service has an admission (a
    server), so a clip takes its turn beside single images instead of starving them."""
    images, timings, admission = [frame.rgb for frame in frames], clip.report.timings, clip.service.admission
    if admission is None:
        return clip.remover.predict(images, timings)
    pixels = sum(image.width * image.height for image in images)
    while True:
        try:
            with admission.admit(pixels) as waited:
                timings.queue += waited
                return clip.remover.predict(images, timings)
        except Busy:
            if admission.draining or clip.cancel.wait(0.5):
                raise


def _finish(clip: _Clip, frame: Frame, mask: Image.Image) -> tuple[Frame, Image.Image]:
    with clip.report.timings.stage("finish"):
        result = finish(Decoded(frame.rgb), mask, clip.request.options, clip.remover.device)
    return frame, result.image


def _write(clip: _Clip, writer, finished: queue.Queue, progress: Progress | None) -> None:
    """Encodes in input order until the end marker, which always comes (also after a cancel)."""
    report = clip.report
    try:
        while (unit := finished.get()) is not _END:
            if isinstance(unit, Future):
                frame, image = unit.result()
                with report.timings.stage("encode"):
                    writer.write(image, frame.pts, frame.duration, frame.deep)
                report.frames += 1
                if progress is not None:
                    progress(report.frames, max(clip.info.frames, report.frames))
            else:
                with report.timings.stage("encode"):
                    writer.write_audio(unit)
    except BaseException as error:
        clip.fail(error)
        _drain_until_end(finished)


def _put(channel: queue.Queue, item, clip: _Clip, final: bool = False) -> bool:
    """Puts unless the clip was stopped (then False). The `final` end marker goes in even then,
    making room by dropping what a stopped clip no longer needs."""
    while final or not clip.cancel.is_set():
        try:
            channel.put(item, timeout=0.1)
            return True
        except queue.Full:
            if final and clip.cancel.is_set():
                _drain(channel)
    return False


def _get(channel: queue.Queue, clip: _Clip):
    """The next item, or _END once the clip is stopped."""
    while not clip.cancel.is_set():
        try:
            return channel.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def _drain(channel: queue.Queue) -> None:
    while True:
        try:
            channel.get_nowait()
        except queue.Empty:
            return


def _drain_until_end(channel: queue.Queue) -> None:
    """After a writer failure: keep taking items so that the end marker can be put."""
    while channel.get() is not _END:
        pass
