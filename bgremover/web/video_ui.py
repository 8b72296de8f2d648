"""The UI's Video tab: upload a clip, preview one frame, choose the in and out points and the
quality, follow the clip's progress, preview and download the result, or cancel it. A thin front
end over the same video jobs as /api/video, so clips from the UI and the API take turns on one
worker, and a closed browser tab cancels its clip."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import gradio as gr

from .. import estimates
from ..service.options import build_request
from ..service.removal import RemovalService
from .events import LIGHT, friendly, model_choices, upload_name, upload_path
from .tabs import size_dropdown
from .waits import CHECKER, estimate_line, follow

OUTPUTS = [("Transparent", "cutout"), ("Colour", "color"), ("Mask (greyscale)", "mask")]
FORMATS = [
    ("WebM VP9 (transparent, plays in browsers)", "webm"),
    ("MOV ProRes 4444 (transparent, for editors)", "mov"),
    ("ZIP of PNG frames (transparent)", "zip"),
    ("Animated WebP (transparent, no sound)", "webp"),
    ("GIF (256 colours, 1-bit transparency, no sound)", "gif"),
    ("MP4 H.264 (opaque)", "mp4"),
]
VIDEO_TYPES = [".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif"]
QUALITY_CHOICES = [
    ("Draft (fastest, largest loss)", "draft"),
    ("Standard", "standard"),
    ("High (slower, smaller loss)", "high"),
    ("Master (slowest, near lossless)", "master"),
]
PREVIEWED = ("webm", "mp4")  # what browsers play; the others are downloads only
# Each clip waits for one worker; these events mostly wait and poll, so a few may run at once.
VIDEO = {"concurrency_limit": 4, "concurrency_id": "video", "preprocess": False}


class VideoHandlers:
    def __init__(self, service: RemovalService, jobs):
        """`jobs`: the server's `VideoJobs` (`web.video_api.video_jobs`), None without PyAV."""
        self.service, self._jobs = service, jobs

    def jobs(self):
        if self._jobs is None:
            raise gr.Error("Video needs PyAV, which is not installed: pip install 'bgremover[video]'.")
        return self._jobs

    def _request(self, model: str, output: str, bg_color: str, size: int | str = 0):
        request = build_request(output=output, bg_color=bg_color, model=model, size=size)
        request.model = self.service.pool.canonical(request.model)
        return request

    @friendly
    def submit(
        self,
        upload,
        model: str,
        output: str,
        bg_color: str,
        fmt: str,
        smoothing: float,
        quality: str = "standard",
        start: float | None = None,
        end: float | None = None,
        size: int | str = 0,
    ):
        """Checks the options and the clip (readable, within the limits) and queues it."""
        jobs = self.jobs()
        request = self._request(model, output, bg_color, size)
        source = upload_path(upload, "Upload a clip first.")
        copy = jobs.upload_path(upload_name(upload))
        shutil.copyfile(source, copy)
        name, smoothing = upload_name(upload), float(smoothing or 0)
        return jobs.submit(copy, name, request, fmt, smoothing, quality, float(start or 0), end or None)

    @friendly
    def preview(self, upload, model: str, output: str, bg_color: str, start: float | None = None, size: int | str = 0):
        """One frame (at the in point) through the same options, before the whole clip is committed."""
        from ..imaging import encoding
        from ..video.reading import Limits, frame_at

        self.jobs()  # PyAV is there
        request = self._request(model, output, bg_color, size)
        path = upload_path(upload, "Upload a clip first.")
        frame = frame_at(path, upload_name(upload), float(start or 0), Limits.from_settings())
        return self.service.remove(encoding.encode(frame, "png"), request).result.image  # lossless

    def run(
        self,
        upload,
        model: str,
        output: str,
        bg_color: str,
        fmt: str,
        smoothing: float = 0.0,
        quality: str = "standard",
        start: float | None = None,
        end: float | None = None,
        size: int | str = 0,
        progress=gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ) -> Iterator:
        """Submits the clip, then reports its progress until it ends; a client that leaves cancels it.
        The status line is cleared first, so a refused clip never shows the previous one's line."""
        yield None, "", None, gr.DownloadButton(visible=False)
        job = self.submit(upload, model, output, bg_color, fmt, smoothing, quality, start, end, size)
        try:
            while job.status in ("queued", "running"):
                if job.frames_total:
                    progress((job.frames_done, job.frames_total), unit="frames", desc=job.status)
                yield job.id, _line(job), None, gr.DownloadButton(visible=False)
                time.sleep(0.5)
        finally:
            job.cancel.set()  # a no-op once it has ended; stops it when the browser left or Cancel was pressed
        if job.status != "done":
            yield job.id, _line(job), None, gr.DownloadButton(visible=False)
            raise gr.Error(job.error or f"The clip was {job.status}; no output was written.")
        preview = str(job.target) if job.fmt in PREVIEWED else None
        download = gr.DownloadButton(value=str(job.target), label=f"Download {job.result_name}", visible=True)
        yield job.id, _line(job), preview, download

    def cancel(self, job_id: str | None) -> str:
        if job_id:
            self.jobs().cancel(job_id)
        return "Cancelled: nothing was written."


def _line(job) -> str:
    total = max(job.frames_total, job.frames_done)
    left = "" if job.eta_seconds is None else f", about {estimates.describe(job.eta_seconds)} left"
    line = f"**{job.name}**: {job.status}, frame {job.frames_done} of {total or '?'}{left}"
    return f"{line}: {job.error}" if job.error else line


def video_tab(service: RemovalService, jobs) -> None:
    """The tab's components and events, inside the caller's `gr.Tab`."""
    handlers = VideoHandlers(service, jobs)
    pool = service.pool
    job_id = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            clip = gr.File(file_types=VIDEO_TYPES, label="Clip", elem_id="video-input")
            model = gr.Dropdown(model_choices(pool), value=pool.default_model, label="Model")
            output = gr.Radio(OUTPUTS, value="cutout", label="Output")
            bg_color = gr.ColorPicker("#ffffff", label="Background colour", visible=False)
            fmt = gr.Dropdown(FORMATS, value="webm", label="File")
            smoothing = gr.Slider(0, 0.9, value=0, step=0.1, label="Smoothing (0 = off: steadier still edges)")
            size = size_dropdown(pool, "video-size")
            quality = gr.Dropdown(QUALITY_CHOICES, value="standard", label="Quality", elem_id="video-quality")
            with gr.Row():
                start = gr.Number(None, minimum=0, label="In point (s)", elem_id="video-start")
                end = gr.Number(None, minimum=0, label="Out point (s, empty: the end)", elem_id="video-end")
            with gr.Row():
                frame = gr.Button("Preview one frame", elem_id="video-frame")
                run = gr.Button("Remove background", variant="primary", elem_id="video-run")
                stop = gr.Button("Cancel", elem_id="video-cancel")
            line = estimate_line(pool, "video-estimate", "frame")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="video-status")
            still = gr.Image(
                label="One frame (at the in point)",
                type="pil",
                format="png",
                elem_id="video-still",
                elem_classes=CHECKER,
            )
            preview = gr.Video(label="Preview", interactive=False, elem_id="video-preview", elem_classes=CHECKER)
            download = gr.DownloadButton("Download", elem_id="video-download", visible=False)

    def choose_output(choice: str):
        return gr.ColorPicker(visible=choice == "color"), gr.Dropdown(value="webm" if choice == "cutout" else "mp4")

    output.change(choose_output, output, [bg_color, fmt], **LIGHT)
    inputs = [clip, model, output, bg_color, fmt, smoothing, quality, start, end, size]
    outputs = [job_id, status, preview, download]
    frame.click(handlers.preview, [clip, model, output, bg_color, start, size], still, api_name="video_frame", **VIDEO)
    event = run.click(handlers.run, inputs, outputs, api_name="video", **VIDEO)
    follow(line, pool, model, size, event, "frame")
    stop.click(handlers.cancel, job_id, status, cancels=[event], **LIGHT)
