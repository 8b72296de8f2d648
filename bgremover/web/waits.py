"""What the UI says about waits and results before they come: the time this machine's past runs
expect, the batch size that suits the device, and the checkerboard behind cut-outs.

On a CPU an image can take ten seconds and a clip minutes; a timer alone looks like a hang. Each
tab shows what past runs here expect for its model and size, and its progress line the time left
once the run's own first image (or frame) is done (`bgremover.estimates`).
"""

from __future__ import annotations

import gradio as gr
from gradio.events import Dependency

from .. import estimates
from ..service.options import parse_size
from ..service.pool import ModelPool, UnknownModel
from .events import LIGHT

# Transparent pixels over a checkerboard, as image editors show them: over white, a white shirt and
# a removed background look the same. On the <img> itself, so only the picture's own area shows it.
CHECKER = "checker"
CHECKER_CSS = (
    f".{CHECKER} img, .{CHECKER} video {{ background-color: #ffffff; "
    "background-image: repeating-conic-gradient(#cfcfcf 0% 25%, #ffffff 0% 50%); background-size: 16px 16px; }"
)
CPU_BATCH, GPU_BATCH = 1, 4  # on a CPU a batch is no faster per image, and shows no progress until it is done


def default_batch_size(pool: ModelPool) -> int:
    return GPU_BATCH if pool.device.type == "cuda" else CPU_BATCH


def past(pool: ModelPool, model: str | None, size: int | str | None, unit: str = "image") -> float | None:
    """Seconds per image (or frame) of `model` at `size` (0 or empty: the default) in past runs here."""
    try:
        name = pool.canonical(model)
        inference_size = parse_size(size or None) or pool.input_size(name)
    except (UnknownModel, ValueError):
        return None
    return estimates.past_seconds(name, pool.device, inference_size, unit)


def expected_line(
    pool: ModelPool, model: str | None, size: int | str | None, count: int = 1, unit: str = "image"
) -> str:
    """The line beside a Run button: what past runs here expect for this model and size."""
    return "⏱ " + estimates.expected(past(pool, model, size, unit), count, unit)


def time_left(total: int, done: int, elapsed: float, seconds_each: float | None) -> str:
    """' · about 1 min 20 s left' for a progress line, or '' where nothing is known yet."""
    left = estimates.seconds_left(total, done, elapsed, seconds_each)
    return "" if not left else f" · about {estimates.describe(left)} left"  # under a second reads "about 1 s"


def estimate_line(pool: ModelPool, elem_id: str, unit: str = "image") -> gr.Markdown:
    """The line under a Run button: what past runs here expect for the default model, as of each page load."""
    return gr.Markdown(lambda: expected_line(pool, pool.default_model, 0, unit=unit), elem_id=elem_id)


def follow(
    line: gr.Markdown, pool: ModelPool, model: gr.Dropdown, size: gr.Dropdown, run: Dependency, unit: str = "image"
) -> None:
    """Keeps `line` on the chosen model and size, and on the figures a finished `run` added."""

    def refresh(chosen: str, chosen_size: int | str) -> str:
        return expected_line(pool, chosen, chosen_size, unit=unit)

    for control in (model, size):
        control.change(refresh, [model, size], line, **LIGHT)
    run.then(refresh, [model, size], line, **LIGHT)
