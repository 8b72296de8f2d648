"""The UI's event handlers, apart from the components they are wired to (`tabs.py`): each one a thin
adapter over the removal service whose parameter names are those of the named API endpoints.

Every handler turns the errors a user can fix (not an image, a gated model, a bad option) into a
`gr.Error` with the message that says how; anything else is logged and reported as unexpected,
and the server goes on serving. The device lock inside the service serialises inference only, so
one user's result is encoded while the next user's image is already on the device.
"""

from __future__ import annotations

import logging
import time
import zipfile
from pathlib import Path

import gradio as gr
from PIL import Image

from ..hub import ModelLoadError
from ..imaging import decoding
from ..planning import output_name
from ..service.options import build_request, parse_number
from ..service.removal import Item, RemovalService
from ..service.usage import measure
from .events import friendly, upload_name, upload_path
from .scratch import Scratch
from .waits import default_batch_size, expected_line, past, time_left

log = logging.getLogger("bgremover.web.ui")
THUMBNAIL = 192
MAX_BATCH_SIZE = 16  # the Batch tab's slider's range, also enforced for API clients of the batch endpoint


def unique_png_names(names: list[str]) -> list[str]:
    """Each original name with .png; a repeated stem (photo.jpg, photo.png) gets ' (2)' and so on."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        stem = Path(name).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        unique.append(f"{stem}.png" if seen[stem] == 1 else f"{stem} ({seen[stem]}).png")
    return unique


class Handlers:
    """The UI's event handlers; their parameter names are the parameters of the named API endpoints."""

    def __init__(self, service: RemovalService, scratch: Scratch):
        self.service = service
        self.pool = service.pool
        self.scratch = scratch

    def decode(self, upload: dict | str | None, missing: str) -> decoding.Decoded:
        return self.service.decode(upload_path(upload, missing), upload_name(upload))

    @friendly
    def remove(
        self,
        image: dict | None,
        model: str,
        output: str = "cutout",
        bg_color: str = "#ffffff",
        bg_image: dict | None = None,
        threshold: float = 0.0,
        crop: bool = False,
        crop_margin: int = 0,
        refine_edges: bool = False,
        size: int | str = 0,
        compression: str = "fast",
        progress=gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ):
        """Before/after, cut-out, mask, the PNG to download and the time taken.

        The PNG is encoded once, outside the device lock, and the same file feeds the slider,
        the result view and the download button.
        """
        background = None
        if output == "image":
            background = self.decode(bg_image, "Choose a background image, or another output.").rgb
        request = build_request(
            output=output,
            bg_color=bg_color if output == "color" else None,
            bg_image=background,
            threshold=parse_number(threshold, "threshold") or None,  # 0 is the slider's "off"
            crop=bool(crop),
            crop_margin=crop_margin,
            refine_edges=bool(refine_edges),
            model=model,
            size=size,
            compression=compression,
        )
        source = upload_path(image, "Upload, paste or drop an image first.")
        progress(0, desc=expected_line(self.pool, model, size))
        removal = self.service.remove(source, request, upload_name(image))
        folder = self.scratch.new_dir()
        path = folder / output_name(removal.name, ".png")
        path.write_bytes(removal.data)
        before = folder / "before.jpg"  # only a preview: JPEG is many times faster to write than PNG
        original = removal.original
        original.save(before, quality=90)
        width, height = original.size
        timings = removal.timings
        info = (
            f"**{removal.model}** at {removal.size} px on {self.pool.device} "
            f"({self.pool.runtime_of(removal.model)}, {self.pool.precision_name}): "
            f"**{timings.infer:.2f} s** inference for {width}×{height} px "
            f"(decode {timings.decode:.2f} s, finish {timings.finish:.2f} s, encode {timings.encode:.2f} s)"
        )
        return (str(before), str(path)), str(path), removal.result.mask, str(path), info

    @friendly
    def batch(
        self,
        files: list[dict] | None,
        rotations: dict | None,
        model: str,
        batch_size: int = 0,
        threshold: float = 0.0,
        size: int | str = 0,
        compression: str = "fast",
        progress=gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ):
        """A gallery of cut-outs, a ZIP of them (original names, .png) and a summary with failures.

        The progress counts the files that are images (by their header) and says the time left:
        from past runs here until the first image is done, then from this run's own rate."""
        if not files:
            raise gr.Error("Add some images first.")
        step = int(
            parse_number(batch_size or None, "batch size", int, default_batch_size(self.pool), (1, MAX_BATCH_SIZE))
        )
        request = build_request(
            threshold=parse_number(threshold, "threshold") or None, model=model, size=size, compression=compression
        )
        items = [
            Item(upload_name(upload), upload_path(upload, "Add some images first."), (rotations or {}).get(index, 0))
            for index, upload in enumerate(files)
        ]
        images = [decoding.pixel_count(item.source) > 0 for item in items]
        total, seconds_each = max(sum(images), 1), past(self.pool, model, size)
        started = time.perf_counter()
        folder = self.scratch.new_dir()
        done, failures, counted = [], [], 0
        progress((0, total), desc="Removing backgrounds" + time_left(total, 0, 0, seconds_each), unit="images")
        for image, removal in zip(images, self.service.remove_many(items, request, step), strict=True):
            if removal.error:
                failures.append(removal.error)
            else:
                done.append(removal)
            counted += image
            left = time_left(total, len(done), time.perf_counter() - started, seconds_each)
            progress((counted, total), desc="Removing backgrounds" + left, unit="images")
        if not done:
            raise gr.Error("None of the files is a usable image: " + " ".join(failures))
        seconds = time.perf_counter() - started
        names = unique_png_names([removal.name for removal in done])
        paths = []
        for name, removal in zip(names, done, strict=True):
            paths.append(folder / name)
            paths[-1].write_bytes(removal.data)
        archive = folder / "backgrounds-removed.zip"
        with zipfile.ZipFile(archive, "w") as zipped:  # PNGs are compressed already: stored as they are
            for path in paths:
                zipped.write(path, path.name)
        summary = f"{len(paths)} image(s) in **{seconds:.2f} s** ({seconds / len(paths):.2f} s each, batch size {step})"
        summary += "".join(f"\n\n> ⚠️ skipped {failure}" for failure in failures)
        return [(str(path), path.name) for path in paths], str(archive), summary

    @friendly
    def compare(
        self,
        image: dict | None,
        model_a: str,
        model_b: str,
        size: int | str = 0,
        progress=gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ):
        """Each model's cut-out with its time and peak memory; a model that cannot load says why.
        Both go through the service, so they wait for admission like any other request."""
        source = upload_path(image, "Upload, paste or drop an image first.")
        progress((0, 2), desc=f"{model_a}: {expected_line(self.pool, model_a, size)}", unit="models")
        first = self.compare_one(source, upload_name(image), model_a, size)
        progress((1, 2), desc=f"{model_b}: {expected_line(self.pool, model_b, size)}", unit="models")
        second = self.compare_one(source, upload_name(image), model_b, size)
        return *first, *second

    def compare_one(self, source: Path, name: str, model: str, size: int | str) -> tuple[Image.Image | None, str]:
        """The time shown is the run's alone: loading the model and one-time work for its size (an
        OpenVINO conversion can take 20 s) are timed apart, or the first model compared looks slow."""
        request = build_request(model=model, size=size)
        started = time.perf_counter()
        try:
            remover = self.service.remover(request)
        except ModelLoadError as error:
            return None, f"**{model}** could not be loaded.\n\n> {error}"
        with remover.engine.lock:
            remover.engine.prepare((remover.inference_size, remover.inference_size))
        setup = time.perf_counter() - started
        with measure(remover.device) as usage:
            removal = self.service.remove(source, request, name)
        info = f"**{removal.model}** at {removal.size} px: {usage.describe()}"
        return removal.result.image, f"{info} · loading and one-time preparation {setup:.2f} s (not counted)"

    @friendly
    def thumbnails(self, files: list[dict] | None) -> tuple[list[dict], dict]:
        """Small previews of a new batch (or why a file is unusable); rotations start over."""
        items = []
        for upload in files or []:
            name = upload_name(upload)
            try:
                thumb = self.decode(upload, "").rgb
                thumb.thumbnail((THUMBNAIL, THUMBNAIL))
                items.append({"name": name, "thumb": thumb, "error": None})
            except decoding.ImageError as error:
                items.append({"name": name, "thumb": None, "error": str(error)})
        return items, {}
