"""The Gradio UI: Remove background, Batch, Compare models and Video tabs (laid out in `tabs.py` and
`video_ui.py`, their events in `handlers.py`) under an always-visible status line, with the banner
that says why a model nobody chose is the one served."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from ..service.pool import ModelPool
from ..service.removal import RemovalService
from .events import LIGHT
from .handlers import Handlers
from .scratch import Scratch
from .tabs import batch_tab, compare_tab, remove_tab
from .video_ui import video_tab
from .waits import CHECKER_CSS

# A white swatch on a white panel is invisible without an outline.
CSS = "#bg-color input[type=color], #bg-color button { border: 1px solid #8a8a8a; border-radius: 4px; }" + CHECKER_CSS


def status_markdown(pool: ModelPool) -> str:
    """Device, and which models are loaded, loading, downloading, cached or failed (with the fix)."""
    rows = pool.models()

    def listed(keep: Callable[[dict], bool], suffix: Callable[[dict], str] = lambda row: "") -> str:
        return ", ".join(row["name"] + suffix(row) for row in rows if keep(row)) or "none"

    busy = listed(lambda r: r["state"] in ("loading", "downloading"), lambda r: f" ({r['state']})")
    lines = [f"> ℹ️ {pool.note}"] if pool.note else []
    lines += [
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
                remove_tab(handlers, pool)
            with gr.Tab("Batch", id="batch"):
                batch_tab(handlers, pool)
            with gr.Tab("Compare models", id="compare"):
                compare_tab(handlers, pool)
            with gr.Tab("Video", id="video"):
                video_tab(service, video_jobs)

        def refresh() -> str:
            return status_markdown(pool)

        gr.Timer(2).tick(refresh, outputs=status, **LIGHT)
        demo.load(refresh, outputs=status, **LIGHT)
    demo.queue(default_concurrency_limit=None)
    return demo
