"""The UI's Video tab: upload a clip, follow its progress, preview and download the result, or
cancel it. A thin front end over the same video jobs as /api/video, so clips from the UI and the
API take turns on one worker, and a closed browser tab cancels its clip."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import gradio as gr

from ..service.options import build_request
from ..service.removal import RemovalService
from .events import LIGHT, friendly, model_choices, upload_name, upload_path

OUTPUTS = [("Transparent", "cutout"), ("Colour", "color"), ("Mask (greyscale)", "mask")]
FORMATS = [
    ("WebM VP9 (transparent, plays in browsers)", "webm"),
    ("MOV ProRes 4444 (transparent, for editors)", "mov"),
    ("ZIP of PNG frames (transparent)", "zip"),
    ("MP4 H.264 (opaque)", "mp4"),
]
VIDEO_TYPES = [".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif"]
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

    @friendly
    def submit(self, upload, model: str, output: str, bg_color: str, fmt: str, smoothing: float):
        """Checks the options and the clip (readable, within the limits) and queues it."""
        jobs = self.jobs()
        request = build_request(output=output, bg_color=bg_color, model=model)
        request.model = self.service.pool.canonical(request.model)
        source = upload_path(upload, "Upload a clip first.")
        copy = jobs.upload_path(upload_name(upload))
        shutil.copyfile(source, copy)
        return jobs.submit(copy, upload_name(upload), request, fmt, float(smoothing or 0))

    def run(
        self,
        upload,
        model: str,
        output: str,
        bg_color: str,
        fmt: str,
        smoothing: float = 0.0,
        progress=gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ) -> Iterator:
        """Submits the clip, then reports its progress until it ends; a client that leaves cancels it."""
        job = self.submit(upload, model, output, bg_color, fmt, smoothing)
        try:
            while job.status in ("queued", "running"):
                if job.frames_total:
                    progress((job.frames_done, job.frames_total), unit="frames", desc=job.status)
                yield job.id, _line(job), None, gr.DownloadButton(visible=False)
                time.sleep(0.5)
        finally:
            job.cancel.set()  # a no-op once it has ended; stops it when the browser left or Cancel was pressed
        if job.status != "done":
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
    return f"**{job.name}**: {job.status}, frame {job.frames_done} of {total or '?'}"


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
            with gr.Row():
                run = gr.Button("Remove background", variant="primary", elem_id="video-run")
                stop = gr.Button("Cancel", elem_id="video-cancel")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="video-status")
            preview = gr.Video(label="Preview", interactive=False, elem_id="video-preview")
            download = gr.DownloadButton("Download", elem_id="video-download", visible=False)

    def choose_output(choice: str):
        return gr.ColorPicker(visible=choice == "color"), gr.Dropdown(value="webm" if choice == "cutout" else "mp4")

    output.change(choose_output, output, [bg_color, fmt], **LIGHT)
    inputs, outputs = [clip, model, output, bg_color, fmt, smoothing], [job_id, status, preview, download]
    event = run.click(handlers.run, inputs, outputs, api_name="video", **VIDEO)
    stop.click(handlers.cancel, job_id, status, cancels=[event], **LIGHT)
