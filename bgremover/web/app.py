"""`python rmbg.py [serve]`: the Gradio UI and the HTTP API on one uvicorn server, sharing one set of models.

The server answers at once, before any model is ready: the default model loads in a
background thread, and until it is ready (or if it cannot be) the status line and
`/health` say why. That keeps a container's first start, which may download a
gigabyte, from looking like a crash.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NoReturn

import uvicorn
from fastapi import FastAPI

from .. import settings
from ..service.config import ServiceConfig
from ..service.removal import RemovalService
from .deadlines import BodyDeadline, with_head_deadline
from .guard import Guard, token_login
from .late_ui import LateUI
from .metrics import serve_metrics_port
from .operations import add_envelope, add_service_routes, observed
from .quota import UploadQuota, upload_folder
from .request_ids import configure_logging
from .scratch import Scratch
from .shield import GradioShield
from .stopping import DrainingServer, Unanswered, delete_users_files
from .video_api import add_video_routes, video_jobs

if TYPE_CHECKING:
    from ..video.jobs import VideoJobs

log = logging.getLogger(__name__)


def create_app(
    service: RemovalService, max_upload: int | None = None, host: str = "0.0.0.0", port: int = 7860
) -> FastAPI:
    """The API routes first, then the page mounted at '/' (a mount there would shadow later
    routes); the page is built once the server has started (late_ui.py)."""
    max_upload = max_upload or settings.max_upload_bytes()
    app = FastAPI(title="Background remover", docs_url=None, redoc_url=None, openapi_url=None)
    token, login = settings.api_token(), settings.ui_login()
    app.state.scratch = Scratch()  # the server deletes it on every way out (stopping.py)
    app.state.video_jobs = video_jobs(service)  # one queue of clips for the API and the UI
    app.state.metrics = add_service_routes(app, service, max_upload, token, app.state.video_jobs)
    add_video_routes(app, service, app.state.video_jobs, token)
    page = Page(service, app.state.scratch, app.state.video_jobs, max_upload, host, port, token, login)
    app.state.ui = ui = LateUI(page.build, app.routes)
    app.router.lifespan_context = ui.lifespan(app.router.lifespan_context)
    app.mount("/", ui)
    quota, max_files = settings.upload_quota_bytes(), settings.upload_max_files()
    app.add_middleware(UploadQuota, folder=upload_folder(), quota=quota, max_files=max_files)
    app.add_middleware(GradioShield, blocks=ui.blocks)
    app.add_middleware(Guard, token=token, sessions=ui if login or token else None)  # before any work
    app.add_middleware(ui.gate)  # outside the guard: the page's paths meet it only once the page exists
    add_envelope(app)  # outside the guard: remove.bg's key header and error envelope on /v1.0/
    return app


@dataclass(frozen=True)
class Page:
    """What the page is built from; `build` runs in a thread once the server answers."""

    service: RemovalService
    scratch: Scratch
    video_jobs: VideoJobs | None
    max_upload: int
    host: str
    port: int
    token: str | None
    login: tuple[str, str] | None

    def build(self) -> FastAPI:
        """A FastAPI holding Gradio's App at '/' and, in its lifespan, Gradio's start-up."""
        import gradio as gr

        from .ui import CSS, build_ui

        demo = build_ui(self.service, self.scratch, self.video_jobs)
        # Gradio checks that an event's input files are the client's own uploads only once `has_launched`
        # is set, which launch() does and mount_gradio_app() does not (its reload mode sets it the same
        # way). Without it, any client could name any image on the server as an input and get it back.
        demo.has_launched = True
        # System fonts only: a self-hosted app should not make every visitor's browser call Google Fonts.
        theme = gr.themes.Soft(
            font=["ui-sans-serif", "system-ui", "sans-serif"],
            font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
        )
        return gr.mount_gradio_app(
            FastAPI(),
            demo,
            path="/",
            server_name=self.host,
            server_port=self.port,
            max_file_size=self.max_upload,
            theme=theme,
            css=CSS,
            auth=self.login or (token_login(self.token) if self.token else None),
            ssr_mode=False,
            footer_links=["api", "settings"],
            run_history=False,  # would keep users' images on the server
            show_error=True,
        )


def serve(service: RemovalService, config: ServiceConfig, host: str, port: int) -> NoReturn:
    """Runs `service` (built by `cli.run_serve`, its default model already loading) until stopped."""
    log_format = settings.log_format()
    app = create_app(service, config.max_upload, host, port)
    metrics_port = settings.metrics_port()
    unanswered = Unanswered(BodyDeadline(app, settings.body_timeout_seconds()))
    uvicorn_config = uvicorn.Config(
        observed(unanswered, app.state.metrics),
        host=host,
        port=port,
        log_level="info",
        http=with_head_deadline(settings.header_timeout_seconds()),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,  # after the drain, browsers' Gradio streams get 5 s
    )
    configure_logging(log_format)  # after uvicorn.Config, which installs uvicorn's handlers
    if config.model_note:
        log.warning("%s", config.model_note)
    clean_up = partial(delete_users_files, app.state.scratch, upload_folder(), app.state.video_jobs)
    if metrics_port is not None:
        try:
            serve_metrics_port(app.state.metrics, host, metrics_port)
        except ValueError as error:
            _refuse_to_start(str(error), clean_up)
    routes = "POST /api/remove, POST /v1.0/removebg, GET /api/models, /health, /livez, /readyz, /metrics"
    log.info("UI on http://%s:%d/ · API: %s", host, port, routes)
    DrainingServer(uvicorn_config, service.admission, settings.drain_seconds(), unanswered, clean_up).run()


def _refuse_to_start(message: str, clean_up: Callable[[], None]) -> NoReturn:
    """One line and exit status 2, as `main` gives a bad setting, but without the interpreter's own
    exit: the default model is loading in a thread, and a thread inside PyTorch while the
    interpreter finalizes aborts the process (as `DrainingServer.exit` explains)."""
    clean_up()
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(2)
