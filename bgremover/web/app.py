"""`python rmbg.py [serve]`: the Gradio UI and the HTTP API on one uvicorn server, sharing one set of models.

The server answers at once, before any model is ready: the default model loads in a
background thread, and until it is ready (or if it cannot be) the status line and
`/health` say why. That keeps a container's first start, which may download a
gigabyte, from looking like a crash.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import FrameType

import gradio as gr
import uvicorn
from fastapi import FastAPI
from gradio.utils import get_upload_folder
from starlette.routing import Mount

from .. import settings
from ..service.admission import Admission
from ..service.config import ServiceConfig, build_service
from ..service.removal import RemovalService
from .api import add_routes
from .guard import Guard, token_login
from .quota import UploadQuota
from .scratch import Scratch
from .shield import GradioShield
from .ui import CSS, build_ui

log = logging.getLogger(__name__)

# System fonts only: a self-hosted app should not make every visitor's browser call Google Fonts.
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
)


def create_app(
    service: RemovalService, max_upload: int | None = None, host: str = "0.0.0.0", port: int = 7860
) -> FastAPI:
    """The API routes first, then Gradio mounted at '/' (a mount there would shadow later routes)."""
    max_upload = max_upload or settings.max_upload_bytes()
    app = FastAPI(title="Background remover", docs_url=None, redoc_url=None, openapi_url=None)
    token, login = settings.api_token(), settings.ui_login()
    add_routes(app, service, max_upload, token)
    demo = build_ui(service, Scratch())
    # Gradio checks that an event's input files are the client's own uploads only once `has_launched`
    # is set, which launch() does and mount_gradio_app() does not (its reload mode sets it the same
    # way). Without it, any client could name any image on the server as an input and get it back.
    demo.has_launched = True
    quota, max_files = settings.upload_quota_bytes(), settings.upload_max_files()
    app.add_middleware(UploadQuota, folder=Path(get_upload_folder()), quota=quota, max_files=max_files)
    gr.mount_gradio_app(
        app,
        demo,
        path="/",
        server_name=host,
        server_port=port,
        max_file_size=max_upload,
        theme=THEME,
        css=CSS,
        auth=login or (token_login(token) if token else None),
        ssr_mode=False,
        footer_links=["api", "settings"],
        run_history=False,  # would keep users' images on the server
        show_error=True,
    )
    gradio_app = next(route.app for route in app.routes if isinstance(route, Mount))
    sessions = gradio_app if login or token else None
    app.add_middleware(GradioShield, blocks=gradio_app.get_blocks)
    app.add_middleware(Guard, token=token, sessions=sessions)  # added last: the outermost, before any work
    return app


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


def serve(config: ServiceConfig, host: str, port: int) -> int:
    """Runs until stopped; bad settings (device, size, limits) fail here, before the port opens."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = build_service(config, serving=True)
    drain_seconds = settings.drain_seconds()
    app = create_app(service, config.max_upload, host, port)
    service.pool.load_in_background()
    log.info("UI on http://%s:%d/ · API: POST /api/remove, GET /api/models, GET /health", host, port)
    # After the drain, browsers may still hold Gradio's heartbeat streams open: those get 5 s.
    uvicorn_config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    DrainingServer(uvicorn_config, service.admission, drain_seconds).run()
    return 0
