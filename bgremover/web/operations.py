"""The routes and middleware that `rmbg serve` and its Ray Serve deployment share, put together once:
the HTTP API (api.py), remove.bg's API (removebg.py), /metrics (metrics.py), and the request IDs
and request metrics around everything (request_ids.py, metrics.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp

from ..service.removal import RemovalService
from .api import add_routes
from .metrics import Metrics, RequestMetrics, add_metrics_route
from .removebg import add_removebg_route
from .removebg_errors import RemoveBgEnvelope
from .request_ids import RequestIds

if TYPE_CHECKING:  # PyAV: only where it is installed
    from ..video.jobs import VideoJobs


def add_service_routes(
    app: FastAPI, service: RemovalService, max_upload: int, token: str | None, video_jobs: VideoJobs | None = None
) -> Metrics:
    """Every API route on `app` (before Gradio is mounted at '/'), and the metrics they feed
    (`video_jobs`: the server's clips, counted by state)."""
    add_routes(app, service, max_upload, token)
    add_removebg_route(app, service, max_upload, token)
    metrics = Metrics(service, video_jobs)
    add_metrics_route(app, metrics, token)
    return metrics


def add_envelope(app: FastAPI) -> None:
    """remove.bg's error envelope around whatever answers /v1.0/ (add it after the auth guard: outside it)."""
    app.add_middleware(RemoveBgEnvelope)


def observed(app: ASGIApp, metrics: Metrics) -> ASGIApp:
    """`app` with every request timed and tagged with its ID: the outermost layers."""
    return RequestIds(RequestMetrics(app, metrics))
