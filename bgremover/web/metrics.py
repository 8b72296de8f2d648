"""Prometheus metrics of one server process, served as `GET /metrics` in the text format.

Requests are counted by route template (`/api/video/{job_id}`, never the raw path, so a client
cannot grow the series without bound), method and status; removals by model (time waiting for
a turn and for the device, time on the device, batch size). Gauges that describe the state
(requests running and waiting, model load times, video jobs by state) are read from the
service when scraped, so they cannot drift. The process collector adds memory and CPU time.
Each app has its own registry, so two apps in one process (the tests) never mix their counts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..service.removal import Removal, RemovalService
from .api import ApiError, check_token

if TYPE_CHECKING:  # PyAV: only where it is installed
    from ..video.jobs import VideoJobs

PATH = "/metrics"
UNMATCHED = "unmatched"  # any path no route took (404s, probes for files): one series for all of them
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCHES = (1, 2, 4, 8, 16, 32, 64)


class ServiceState(Collector):
    """The gauges read from the service at each scrape."""

    def __init__(self, service: RemovalService, video_jobs: VideoJobs | None = None):
        self.service, self.video_jobs = service, video_jobs

    def collect(self):
        running = GaugeMetricFamily("rmbg_requests_running", "Removals being processed now (admitted).")
        waiting = GaugeMetricFamily("rmbg_queue_depth", "Removals waiting for admission now.")
        if self.service.admission is not None:
            now_running, now_waiting = self.service.admission.load()
            running.add_metric([], now_running)
            waiting.add_metric([], now_waiting)
        loads = GaugeMetricFamily(
            "rmbg_model_load_seconds", "How long each loaded model took to load.", labels=["model"]
        )
        for model, seconds in dict(self.service.pool.load_seconds).items():
            loads.add_metric([model], seconds)
        yield from (running, waiting, loads)
        yield from self._video_jobs()

    def _video_jobs(self):
        jobs = GaugeMetricFamily("rmbg_video_jobs", "Video jobs kept now, by state.", labels=["state"])
        if self.video_jobs is not None:
            for state, count in self.video_jobs.count_by_status().items():
                jobs.add_metric([state], count)
        yield jobs


class Metrics:
    """The registry of one app and the metrics its middleware and the removal service feed."""

    def __init__(self, service: RemovalService, video_jobs: VideoJobs | None = None):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(ServiceState(service, video_jobs))
        labels = {"registry": self.registry}
        self.requests = Histogram(
            "rmbg_http_request_duration_seconds",
            "HTTP requests: seconds from the request's arrival to its answer's end.",
            ["route", "method", "status"],
            buckets=_SECONDS,
            **labels,
        )
        self.in_flight = Gauge("rmbg_http_requests_in_flight", "HTTP requests being answered now.", **labels)
        self.queue = Histogram(
            "rmbg_queue_seconds", "Seconds a removal waited for admission and the device.", ["model"], **labels
        )
        self.infer = Histogram(
            "rmbg_inference_seconds", "Seconds on the device per removal (its share of its batch).", ["model"], **labels
        )
        self.batch = Histogram(
            "rmbg_batch_size", "Images per forward pass, per removal.", ["model"], buckets=_BATCHES, **labels
        )
        service.observers.append(self.observe)

    def observe(self, removal: Removal) -> None:
        """One finished removal (RemovalService.observers)."""
        self.queue.labels(removal.model).observe(removal.timings.queue)
        self.infer.labels(removal.model).observe(removal.timings.infer)
        self.batch.labels(removal.model).observe(removal.batch)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The template of the route that answered (FastAPI puts it in the scope), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """ASGI middleware: the duration of every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, watched)
        finally:
            self.metrics.in_flight.dec()
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.requests.labels(route_template(scope), method, str(status)).observe(
                time.perf_counter() - started
            )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def add_metrics_route(app: FastAPI, metrics: Metrics, token: str | None) -> None:
    """GET /metrics; with RMBG_API_TOKEN (or RMBG_AUTH) set it needs credentials like the API, and
    RMBG_METRICS_PORT serves it without them on a port of its own."""

    @app.get(PATH)
    def exposition(request: Request) -> Response:
        try:
            check_token(request, token)
        except ApiError as error:
            return error.response()
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def serve_metrics_port(metrics: Metrics, host: str, port: int) -> None:
    """RMBG_METRICS_PORT: the metrics alone, on their own port and thread, for internal scraping."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as error:  # taken, or not ours to bind: a setting to fix, not a traceback
        raise ValueError(f"RMBG_METRICS_PORT={port}: cannot listen on {host}:{port} ({error.strerror}).") from error
