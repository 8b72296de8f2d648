"""The Gradio UI: Remove background, Batch, Compare models and Video tabs under an always-visible
status line; their events call `handlers.Handlers` (and `video_ui` for clips).

Every handler is a thin adapter over the removal service; the device lock inside it serialises
inference only, so one user's result is encoded while the next user's image is already on the device.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from ..service.pool import ModelPool
from ..service.removal import RemovalService
from ..service.steps import rotated
from .events import LIGHT, model_choices
from .handlers import MAX_BATCH_SIZE, THUMBNAIL, Handlers
from .scratch import Scratch
from .video_ui import video_tab

OUTPUT_CHOICES = [("Transparent", "cutout"), ("Colour", "color"), ("Background image", "image")]
COMPRESSION_CHOICES = [("Fast", "fast"), ("Small", "small")]
SIZES = (512, 768, 1024, 1536, 2048)
# A white swatch on a white panel is invisible without an outline.
CSS = "#bg-color input[type=color], #bg-color button { border: 1px solid #8a8a8a; border-radius: 4px; }"
# Compare loads models on demand: its own queue, so a slow load never holds up the other tabs.
COMPARE = {"concurrency_limit": 1, "concurrency_id": "compare", "preprocess": False}
# Heavy events: two at a time (one on the device while the other decodes or encodes; the device
# lock orders inference), the rest wait in Gradio's queue and see their place; uploads are decoded
# by the app itself (see decode_upload).
HEAVY = {"concurrency_limit": 2, "concurrency_id": "work", "preprocess": False}


def size_choices(pool: ModelPool) -> list[tuple[str, int]]:
    """0 is the server's --size where one was given, else each model's own input size."""
    default = f"server default ({pool.default_size})" if pool.default_size else "model default"
    return [(default, 0)] + [(str(size), size) for size in sorted({*SIZES, pool.default_size or SIZES[0]})]


def compare_defaults(pool: ModelPool) -> tuple[str, str]:
    """The server's model, and another one that is ready to run: a cached one if there is any."""
    others = [name for name in pool.names() if name != pool.default_model]
    ready = [name for name in others if pool.availability(name) == "ready"]
    return pool.default_model, (ready or others)[0]


def status_markdown(pool: ModelPool) -> str:
    """Device, and which models are loaded, loading, downloading, cached or failed (with the fix)."""
    rows = pool.models()

    def listed(keep: Callable[[dict], bool], suffix: Callable[[dict], str] = lambda row: "") -> str:
        return ", ".join(row["name"] + suffix(row) for row in rows if keep(row)) or "none"

    busy = listed(lambda r: r["state"] in ("loading", "downloading"), lambda r: f" ({r['state']})")
    lines = [
        f"**Device:** {pool.describe_device()} · **Default model:** {pool.default_model} · "
        f"**Loaded:** {listed(lambda r: r['loaded'])} · **Loading:** {busy} · "
        f"**Cached:** {listed(lambda r: r['cached'])}"
    ]
    # Only the default model's trouble concerns everyone; a model picked in one tab reports there.
    lines += [
        f"> ⚠️ **{row['name']}** is not available: {row['error']}"
        for row in rows
        if row["error"] and row["name"] == pool.default_model
    ]
    return "\n\n".join(lines)


def _rotator(index: int, step: int) -> Callable[[dict], dict]:
    def rotate(rotations: dict) -> dict:
        return {**rotations, index: (rotations.get(index, 0) + step) % 4}

    return rotate


def _model_dropdown(pool: ModelPool, label: str, value: str, elem_id: str | None = None) -> gr.Dropdown:
    return gr.Dropdown(
        model_choices(pool),
        value=value,
        label=label,
        elem_id=elem_id,
        info="RMBG weights are for non-commercial use; gated models need HF_TOKEN.",
    )


def _compression_radio() -> gr.Radio:
    return gr.Radio(
        COMPRESSION_CHOICES, value="fast", label="PNG compression", info="Smaller files take longer to write."
    )


def _size_dropdown(pool: ModelPool) -> gr.Dropdown:
    return gr.Dropdown(
        size_choices(pool),
        value=pool.default_size or 0,
        label="Inference size",
        info="Larger sees finer detail but is slower; a multiple of 32.",
        allow_custom_value=True,
    )


def _remove_tab(handlers: Handlers, pool: ModelPool) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(
                type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image", elem_id="remove-input"
            )
            model = _model_dropdown(pool, "Model", pool.default_model)
            with gr.Accordion("Options", open=False):
                output = gr.Radio(OUTPUT_CHOICES, value="cutout", label="Output")
                bg_color = gr.ColorPicker("#ffffff", label="Background colour", visible=False, elem_id="bg-color")
                bg_image = gr.Image(
                    type="filepath", image_mode=None, label="Background image", visible=False, height=160
                )
                threshold = gr.Slider(0, 1, value=0, step=0.01, label="Threshold (0 = off: soft edges)")
                with gr.Row():
                    crop = gr.Checkbox(label="Crop to subject")
                    crop_margin = gr.Number(0, minimum=0, precision=0, label="Crop margin (px)")
                refine_edges = gr.Checkbox(label="Refine edges (remove colour fringes)")
                size = _size_dropdown(pool)
                compression = _compression_radio()
            run = gr.Button("Remove background", variant="primary", elem_id="remove-button")
        with gr.Column(scale=2):
            slider = gr.ImageSlider(label="Before / after", format="png", max_height=520, elem_id="remove-slider")
            with gr.Row():
                cutout = gr.Image(label="Result", format="png", elem_id="remove-result", interactive=False)
                mask = gr.Image(label="Mask", format="png", elem_id="remove-mask", interactive=False)
            download = gr.DownloadButton("Download PNG", elem_id="remove-download")
            info = gr.Markdown(elem_id="remove-info")

    def show_background_inputs(choice: str):
        return gr.ColorPicker(visible=choice == "color"), gr.Image(visible=choice == "image")

    output.change(show_background_inputs, output, [bg_color, bg_image], **LIGHT)
    run.click(
        handlers.remove,
        [image, model, output, bg_color, bg_image, threshold, crop, crop_margin, refine_edges, size, compression],
        [slider, cutout, mask, download, info],
        api_name="remove",
        **HEAVY,
    )


def _batch_tab(handlers: Handlers, pool: ModelPool) -> None:
    files = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="batch-files")
    items, rotations = gr.State([]), gr.State({})

    @gr.render(inputs=[items, rotations])
    def previews(previews: list[dict], turns: dict) -> None:
        with gr.Row():
            for index, item in enumerate(previews):
                with gr.Column(min_width=THUMBNAIL, scale=0):
                    if item["thumb"] is None:
                        gr.Markdown(item["error"])
                        continue
                    thumb = rotated(item["thumb"], turns.get(index, 0))
                    gr.Image(
                        thumb,
                        label=item["name"],
                        height=THUMBNAIL,
                        interactive=False,
                        buttons=[],
                        elem_classes="batch-preview",
                    )
                    with gr.Row():
                        left = gr.Button("⟲ Left", size="sm", min_width=60)
                        right = gr.Button("⟳ Right", size="sm", min_width=60)
                    left.click(_rotator(index, 1), rotations, rotations, **LIGHT)
                    right.click(_rotator(index, -1), rotations, rotations, **LIGHT)

    with gr.Row():
        model = _model_dropdown(pool, "Model", pool.default_model)
        batch_size = gr.Slider(
            1, MAX_BATCH_SIZE, value=4, step=1, label="Batch size", info="Images per inference; more needs memory."
        )
        threshold = gr.Slider(0, 1, value=0, step=0.01, label="Threshold (0 = off: soft edges)")
        size = _size_dropdown(pool)
        compression = _compression_radio()
    run = gr.Button("Remove backgrounds", variant="primary", elem_id="batch-button")
    # Tiles keep a quarter of the width whatever their number, and the gallery grows to show them
    # whole with their names (stretched to the full width, two results were cut off, names hidden).
    gallery = gr.Gallery(
        label="Results",
        columns=4,
        fit_columns=False,
        height="auto",
        format="png",
        object_fit="contain",
        elem_id="batch-gallery",
    )
    archive = gr.DownloadButton("Download all (ZIP)", elem_id="batch-download")
    summary = gr.Markdown()
    files.change(handlers.thumbnails, files, [items, rotations], preprocess=False, **LIGHT)
    run.click(
        handlers.batch,
        [files, rotations, model, batch_size, threshold, size, compression],
        [gallery, archive, summary],
        api_name="batch",
        **HEAVY,
    )


def _compare_tab(handlers: Handlers, pool: ModelPool) -> None:
    with gr.Row():
        image = gr.Image(
            type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image", elem_id="compare-input"
        )
        with gr.Column():
            first, second = compare_defaults(pool)
            model_a = _model_dropdown(pool, "Model A", first, "compare-model-a")
            model_b = _model_dropdown(pool, "Model B", second, "compare-model-b")
            size = _size_dropdown(pool)
            run = gr.Button("Compare", variant="primary", elem_id="compare-button")
    with gr.Row():
        with gr.Column():
            image_a = gr.Image(label="Model A", format="png", interactive=False)
            info_a = gr.Markdown(elem_id="compare-info-a")
        with gr.Column():
            image_b = gr.Image(label="Model B", format="png", interactive=False)
            info_b = gr.Markdown(elem_id="compare-info-b")
    run.click(
        handlers.compare,
        [image, model_a, model_b, size],
        [image_a, info_a, image_b, info_b],
        api_name="compare",
        **COMPARE,
    )


def build_ui(service: RemovalService, scratch: Scratch | None = None, video_jobs=None) -> gr.Blocks:
    """The whole UI; the default model keeps loading in the background while it is already served.
    `video_jobs`: the server's queue of clips, shared with the video API (None: no PyAV here)."""
    pool = service.pool
    handlers = Handlers(service, scratch or Scratch())
    with gr.Blocks(title="Background remover", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## Background remover")
        status = gr.Markdown(status_markdown(pool), elem_id="status")
        with gr.Tabs():
            with gr.Tab("Remove background", id="remove"):
                _remove_tab(handlers, pool)
            with gr.Tab("Batch", id="batch"):
                _batch_tab(handlers, pool)
            with gr.Tab("Compare models", id="compare"):
                _compare_tab(handlers, pool)
            with gr.Tab("Video", id="video"):
                video_tab(service, video_jobs)

        def refresh() -> str:
            return status_markdown(pool)

        gr.Timer(2).tick(refresh, outputs=status, **LIGHT)
        demo.load(refresh, outputs=status, **LIGHT)
    demo.queue(default_concurrency_limit=None)
    return demo
