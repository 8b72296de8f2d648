"""`python rmbg.py [serve]`: the Gradio UI and the HTTP API on one uvicorn server, sharing one set of models.

The server answers at once, before any model is ready: the default model loads in a
background thread, and until it is ready (or if it cannot be) the status line and
`/health` say why. That keeps a container's first start, which may download a
gigabyte, from looking like a crash.
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from types import FrameType

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from gradio.utils import get_upload_folder
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import settings
from ..service.admission import Admission
from ..service.pool import ModelPool
from ..service.removal import RemovalService
from .api import add_routes
from .scratch import Scratch
from .ui import CSS, build_ui
from .video_api import add_video_routes

log = logging.getLogger(__name__)

# System fonts only: a self-hosted app should not make every visitor's browser call Google Fonts.
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
)


class UploadQuota:
    """Refuses UI uploads (Gradio's /upload route) with 503 while the upload folder holds more than
    RMBG_UPLOAD_QUOTA_MB, so anonymous clients cannot fill the disk; files there expire after an hour."""

    def __init__(self, app: ASGIApp, folder: Path, quota: int):
        self.app, self.folder, self.quota = app, folder, quota

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/upload") and self._used() >= self.quota:
            message = "the server's upload space is full; try again later (RMBG_UPLOAD_QUOTA_MB)."
            response = JSONResponse({"error": message}, status_code=503, headers={"Retry-After": "60"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _used(self) -> int:
        return sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file()) if self.folder.is_dir() else 0


def create_app(
    service: RemovalService, max_upload: int | None = None, host: str = "0.0.0.0", port: int = 7860
) -> FastAPI:
    """The API routes first, then Gradio mounted at '/' (a mount there would shadow later routes)."""
    max_upload = max_upload or settings.max_upload_bytes()
    app = FastAPI(title="Background remover", docs_url=None, redoc_url=None, openapi_url=None)
    add_routes(app, service, max_upload, settings.api_token())
    add_video_routes(app, service, settings.api_token())
    demo = build_ui(service, Scratch())
    # Gradio checks that an event's input files are the client's own uploads only once `has_launched`
    # is set, which launch() does and mount_gradio_app() does not (its reload mode sets it the same
    # way). Without it, any client could name any image on the server as an input and get it back.
    demo.has_launched = True
    app.add_middleware(UploadQuota, folder=Path(get_upload_folder()), quota=settings.upload_quota_bytes())
    return gr.mount_gradio_app(
        app,
        demo,
        path="/",
        server_name=host,
        server_port=port,
        max_file_size=max_upload,
        theme=THEME,
        css=CSS,
        auth=settings.ui_login(),
        ssr_mode=False,
        footer_links=["api", "settings"],
        run_history=False,  # would keep users' images on the server
        show_error=True,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain before it stops: on SIGTERM (or Ctrl-C) new work gets 503 and /health
    says 'draining', while requests already running or waiting finish (up to RMBG_DRAIN_SECONDS);
    then uvicorn's own shutdown follows. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, admission: Admission, drain_seconds: float):
        super().__init__(config)
        self.admission = admission
        self.drain_seconds = drain_seconds

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.admission.draining:
            super().handle_exit(sig, frame)
            return
        self.admission.draining = True
        log.info("stopping: finishing the requests in progress (up to %.0f s) before shutting down", self.drain_seconds)
        threading.Thread(target=self._drain_then_exit, args=(sig, frame), name="rmbg-drain", daemon=True).start()

    def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.admission.idle(self.drain_seconds):
            log.warning("requests still running after %.0f s (RMBG_DRAIN_SECONDS): stopping anyway", self.drain_seconds)
        super().handle_exit(sig, frame)


def serve(args: argparse.Namespace) -> int:
    """Runs until stopped; bad settings (device, size, limits) fail here, before the port opens."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pool = ModelPool(args.model, args.device, args.precision, args.size, args.engine)
    admission, drain_seconds = Admission(settings.concurrent_requests(pool.device.type)), settings.drain_seconds()
    service = RemovalService(pool, admission=admission)
    app = create_app(service, settings.max_upload_bytes(), args.host, args.port)
    pool.load_in_background()
    log.info("UI on http://%s:%d/ · API: POST /api/remove, GET /api/models, GET /health", args.host, args.port)
    # After the drain, browsers may still hold Gradio's heartbeat streams open: those get 5 s.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    DrainingServer(config, admission, drain_seconds).run()
    return 0
