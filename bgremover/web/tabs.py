"""The layout of the Remove background, Batch and Compare models tabs, and the controls the tabs
share (the Video tab's too): each tab's components, wired to the handlers of `handlers.Handlers`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import gradio as gr

from ..service.pool import ModelPool
from ..service.steps import rotated
from .events import LIGHT, model_choices, model_hint
from .handlers import MAX_BATCH_SIZE, THUMBNAIL
from .waits import CHECKER, default_batch_size, estimate_line, expected_line, follow

if TYPE_CHECKING:  # ui builds the tabs with its handlers
    from .handlers import Handlers

OUTPUT_CHOICES = [("Transparent", "cutout"), ("Colour", "color"), ("Background image", "image")]
COMPRESSION_CHOICES = [("Fast", "fast"), ("Small", "small")]
SIZES = (512, 768, 1024, 1536, 2048)
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
    """The server's model, and another that can load: one on disk, else one that downloads without a
    token, else the server's model again (a gated or missing model B would only fail)."""
    others = [name for name in pool.names() if name != pool.default_model]
    for availability in ("ready", "download"):
        loadable = [name for name in others if pool.availability(name) == availability]
        if loadable:
            return pool.default_model, loadable[0]
    return pool.default_model, pool.default_model


def compare_expected(pool: ModelPool, first: str, second: str, size: int | str) -> str:
    """What past runs here expect of each model, one line each."""
    return "  \n".join(f"{name}: {expected_line(pool, name, size)}" for name in (first, second))


def _rotator(index: int, step: int) -> Callable[[dict], dict]:
    def rotate(rotations: dict) -> dict:
        return {**rotations, index: (rotations.get(index, 0) + step) % 4}

    return rotate


def model_dropdown(pool: ModelPool, label: str, value: str, elem_id: str | None = None) -> gr.Dropdown:
    """The licence hint shows where the chosen model is a gated one, and follows the choice."""
    dropdown = gr.Dropdown(model_choices(pool), value=value, label=label, elem_id=elem_id, info=model_hint(pool, value))
    dropdown.change(lambda chosen: gr.Dropdown(info=model_hint(pool, chosen)), dropdown, dropdown, **LIGHT)
    return dropdown


def _compression_radio() -> gr.Radio:
    return gr.Radio(
        COMPRESSION_CHOICES, value="fast", label="PNG compression", info="Smaller files take longer to write."
    )


def size_dropdown(pool: ModelPool, elem_id: str | None = None) -> gr.Dropdown:
    return gr.Dropdown(
        size_choices(pool),
        value=pool.default_size or 0,
        label="Inference size",
        elem_id=elem_id,
        info="Larger sees finer detail but is slower; a multiple of 32.",
        allow_custom_value=True,
    )


def remove_tab(handlers: Handlers, pool: ModelPool) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(
                type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image", elem_id="remove-input"
            )
            model = model_dropdown(pool, "Model", pool.default_model)
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
                size = size_dropdown(pool)
                compression = _compression_radio()
            run = gr.Button("Remove background", variant="primary", elem_id="remove-button")
            line = estimate_line(pool, "remove-estimate")
        with gr.Column(scale=2):
            slider = gr.ImageSlider(
                label="Before / after", format="png", max_height=520, elem_id="remove-slider", elem_classes=CHECKER
            )
            with gr.Row():
                cutout = gr.Image(
                    label="Result", format="png", elem_id="remove-result", interactive=False, elem_classes=CHECKER
                )
                mask = gr.Image(label="Mask", format="png", elem_id="remove-mask", interactive=False)
            download = gr.DownloadButton("Download PNG", elem_id="remove-download")
            info = gr.Markdown(elem_id="remove-info")

    def show_background_inputs(choice: str):
        return gr.ColorPicker(visible=choice == "color"), gr.Image(visible=choice == "image")

    output.change(show_background_inputs, output, [bg_color, bg_image], **LIGHT)
    event = run.click(
        handlers.remove,
        [image, model, output, bg_color, bg_image, threshold, crop, crop_margin, refine_edges, size, compression],
        [slider, cutout, mask, download, info],
        api_name="remove",
        **HEAVY,
    )
    follow(line, pool, model, size, event)


def batch_tab(handlers: Handlers, pool: ModelPool) -> None:
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
        model = model_dropdown(pool, "Model", pool.default_model)
        batch_size = gr.Slider(
            1,
            MAX_BATCH_SIZE,
            value=default_batch_size(pool),
            step=1,
            label="Batch size",
            elem_id="batch-size",
            info="Images per inference: faster on a GPU, no faster on a CPU; more needs memory.",
        )
        threshold = gr.Slider(0, 1, value=0, step=0.01, label="Threshold (0 = off: soft edges)")
        size = size_dropdown(pool)
        compression = _compression_radio()
    run = gr.Button("Remove backgrounds", variant="primary", elem_id="batch-button")
    line = estimate_line(pool, "batch-estimate")
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
        elem_classes=CHECKER,
    )
    archive = gr.DownloadButton("Download all (ZIP)", elem_id="batch-download")
    summary = gr.Markdown()
    files.change(handlers.thumbnails, files, [items, rotations], preprocess=False, **LIGHT)
    event = run.click(
        handlers.batch,
        [files, rotations, model, batch_size, threshold, size, compression],
        [gallery, archive, summary],
        api_name="batch",
        **HEAVY,
    )

    def refresh(chosen: str, chosen_size: int | str, previews: list[dict]) -> str:
        """For the images among the files (the others are named in the previews, and skipped)."""
        count = sum(item["thumb"] is not None for item in previews) or 1
        return expected_line(pool, chosen, chosen_size, count)

    for trigger in (model.change, size.change, items.change, event.then):
        trigger(refresh, [model, size, items], line, **LIGHT)


def compare_tab(handlers: Handlers, pool: ModelPool) -> None:
    with gr.Row():
        image = gr.Image(
            type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image", elem_id="compare-input"
        )
        with gr.Column():
            first, second = compare_defaults(pool)
            model_a = model_dropdown(pool, "Model A", first, "compare-model-a")
            model_b = model_dropdown(pool, "Model B", second, "compare-model-b")
            size = size_dropdown(pool)
            run = gr.Button("Compare", variant="primary", elem_id="compare-button")
            line = gr.Markdown(lambda: compare_expected(pool, first, second, 0), elem_id="compare-estimate")
    with gr.Row():
        with gr.Column():
            image_a = gr.Image(label="Model A", format="png", interactive=False, elem_classes=CHECKER)
            info_a = gr.Markdown(elem_id="compare-info-a")
        with gr.Column():
            image_b = gr.Image(label="Model B", format="png", interactive=False, elem_classes=CHECKER)
            info_b = gr.Markdown(elem_id="compare-info-b")
    event = run.click(
        handlers.compare,
        [image, model_a, model_b, size],
        [image_a, info_a, image_b, info_b],
        api_name="compare",
        **COMPARE,
    )

    for trigger in (model_a.change, model_b.change, size.change, event.then):
        trigger(partial(compare_expected, pool), [model_a, model_b, size], line, **LIGHT)
