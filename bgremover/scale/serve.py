"""`rmbg serve --ray`: the HTTP API of `rmbg serve` as a Ray Serve application.

Each replica is a process with its own `ModelPool` (its model on its own GPU where there is
one) behind the very routes of `web.operations.add_service_routes` (the HTTP API, remove.bg's API,
/livez, /readyz and /metrics of this replica), mounted through Serve's FastAPI
ingress, so paths, upload limit, token, statuses and error bodies are those of `rmbg serve`.
Where requests are batched (RMBG_BATCH_WINDOW_MS above 0, by default on GPUs), concurrent
requests on a replica are gathered by `@serve.batch` into one `Remover.predict` per model and
size; decoding, compositing and encoding stay in the request's own thread.

The Gradio UI is not served here: it keeps each user's session (uploads, results) in one
process, so it stays with the single-process `rmbg serve`.

    rmbg serve --ray [ADDRESS] --ray-replicas 2 [--ray-max-replicas 8]
    serve run bgremover.scale.serve:build_app model=RMBG-1.4 replicas=2 max_replicas=8
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, replace

from fastapi import FastAPI
from PIL import Image
from ray import serve
from ray.serve import Application

from .. import settings
from ..pipeline import Remover, Timings
from ..service.config import ServiceConfig, build_service
from ..service.options import parse_size
from ..service.removal import RemovalService
from ..web.metrics import RequestMetrics
from ..web.operations import add_envelope, add_service_routes
from ..web.request_ids import RequestIds

log = logging.getLogger(__name__)

APP_NAME = "rmbg"
Ask = tuple[Remover, Image.Image]


@dataclass(frozen=True)
class ServeConfig:
    """What every replica loads and enforces (`service`, read once where the application is built,
    so replicas never read their own environment), and how many replicas there are."""

    service: ServiceConfig
    token: str | None = None
    replicas: int = 1
    max_replicas: int | None = None
    cpus: int | None = None  # per CPU replica, also its PyTorch threads; None: the cluster's CPUs / replicas

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("--ray-replicas must be at least 1")


@dataclass(frozen=True)
class ReplicaLimits:
    """What a replica takes on and how it batches, from the service config for the replicas' device,
    so that Serve's limits and every replica's admission agree."""

    running: int  # requests processed at once; enough for a whole batch where requests are batched
    waiting: int
    window: float  # seconds a batch may wait to fill; 0: every request is its own batch
    max_batch: int

    @classmethod
    def for_device(cls, config: ServiceConfig, device_type: str) -> ReplicaLimits:
        window = config.batch_window_for(device_type)
        max_batch = config.max_batch if window > 0 else 1
        return cls(config.concurrent_requests(device_type), config.queue_limit, window, max_batch)


def predict_groups(asks: list[Ask]) -> list[tuple[Image.Image, Timings, int]]:
    """One `Remover.predict` per model and size among the gathered requests: each request's mask,
    its share of the batch's time and the size of the batch it was inferred in."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for index, (remover, _) in enumerate(asks):
        groups[(remover.info.name, remover.inference_size)].append(index)
    results: list = [None] * len(asks)
    for indices in groups.values():
        shared = Timings()
        masks = asks[indices[0]][0].predict([asks[index][1] for index in indices], shared)
        share = Timings(queue=shared.queue / len(indices), infer=shared.infer / len(indices))
        for index, mask in zip(indices, masks, strict=True):
            results[index] = (mask, share, len(indices))
    return results


class ServeBatcher:
    """The interface of `MicroBatcher` (`predict(image, timings)`) over the replica's `@serve.batch`
    method: the request's worker thread hands its image to the replica's event loop and waits."""

    def __init__(self, remover: Remover, batched, loop: asyncio.AbstractEventLoop):
        self.remover, self.batched, self.loop = remover, batched, loop

    def predict(self, image: Image.Image, timings: Timings) -> tuple[Image.Image, int]:
        call: Future = asyncio.run_coroutine_threadsafe(self.batched((self.remover, image)), self.loop)
        mask, share, batch = call.result()
        timings.queue += share.queue
        timings.infer += share.infer
        return mask, batch


class ServeRemovalService(RemovalService):
    """The removal service of one replica: single requests are batched by Serve, not by `MicroBatcher`
    (`batch_through` hands it the replica's `@serve.batch` method once its event loop runs)."""

    def batch_through(self, batched, loop: asyncio.AbstractEventLoop) -> None:
        self._batched, self._loop = batched, loop

    def _batcher(self, remover: Remover) -> ServeBatcher:
        return ServeBatcher(remover, self._batched, self._loop)


@serve.deployment(name="rmbg")
@serve.ingress()
class RemovalDeployment:
    """One replica: a removal service from the one builder, its model loading in the background as in
    `rmbg serve` (`/health` says 503 with the reason until it is ready), and the API routes on it."""

    def __init__(self, config: ServeConfig, limits: ReplicaLimits):
        if config.service.device == "cpu" and config.cpus:
            import torch

            torch.set_num_threads(config.cpus)
        self.config, self.limits = config, limits
        self.service = build_service(config.service, serving=True, service_type=ServeRemovalService)
        self.service.pool.load_in_background()
        self.predict_batch.set_max_batch_size(limits.max_batch)
        self.predict_batch.set_batch_wait_timeout_s(limits.window)

    async def __serve_build_asgi_app__(self) -> FastAPI:
        self.service.batch_through(self.predict_batch, asyncio.get_running_loop())
        app = FastAPI(title="Background remover (Ray Serve)", docs_url=None, redoc_url=None, openapi_url=None)
        metrics = add_service_routes(app, self.service, self.config.service.max_upload, self.config.token)
        add_envelope(app)
        app.add_middleware(RequestMetrics, metrics=metrics)
        app.add_middleware(RequestIds)  # added last: the outermost, as `web.operations.observed` puts it
        return app

    @serve.batch  # its size and wait are set in __init__, from its ReplicaLimits
    async def predict_batch(self, asks: list[Ask]) -> list[tuple[Image.Image, Timings, int]]:
        return await asyncio.to_thread(predict_groups, asks)


def _wants_gpu(device: str) -> bool:
    """CUDA replicas for a CUDA device, or for `auto` where the cluster (or, unconnected, this machine) has a GPU."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) >= 1
    import torch

    return torch.cuda.is_available()


def _cpus_per_replica(config: ServeConfig) -> int:
    """The cluster's CPUs shared out among the most replicas there may be (1 when not connected yet)."""
    import ray

    if config.cpus:
        return config.cpus
    total = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else 1
    return max(1, int(total // max(config.replicas, config.max_replicas or 0)))


def application(config: ServeConfig) -> Application:
    """The deployment with its replicas' resources, and autoscaling when `max_replicas` is above `replicas`.

    A CPU replica reserves `cpus` CPUs and runs PyTorch on as many threads (Ray's own default,
    one thread per actor, would leave the other cores idle); a GPU replica takes one GPU.
    A replica takes as many requests as `rmbg serve` does (`ReplicaLimits`: those it runs plus
    RMBG_QUEUE_LIMIT waiting), so its own admission answers 503 + Retry-After the same way;
    autoscaling aims at as many requests in progress per replica as it runs at once.
    """
    gpu = _wants_gpu(config.service.device)
    device = "cuda" if gpu else "cpu"  # a replica sees its one GPU as cuda:0
    cpus = None if gpu else _cpus_per_replica(config)
    config = replace(config, service=replace(config.service, device=device), cpus=cpus)
    limits = ReplicaLimits.for_device(config.service, device)
    options: dict = {
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 1} if gpu else {"num_cpus": config.cpus},
        "max_ongoing_requests": limits.running + limits.waiting,
    }
    if config.max_replicas and config.max_replicas > config.replicas:
        options["autoscaling_config"] = {
            "min_replicas": config.replicas,
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": limits.running,
        }
    else:
        options["num_replicas"] = config.replicas
    return RemovalDeployment.options(**options).bind(config, limits)


def build_app(args: dict[str, str]) -> Application:
    """`serve run bgremover.scale.serve:build_app key=value ...`: model, device, precision, engine, size,
    replicas, max_replicas, cpus; anything left out comes from the same settings as `rmbg serve`."""
    known = {"model", "device", "precision", "engine", "size", "replicas", "max_replicas", "cpus"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}: use {', '.join(sorted(known))}.")
    service = ServiceConfig.from_settings(
        model=args.get("model") or None,
        device=args.get("device") or None,
        precision=args.get("precision") or None,
        runtime=args.get("engine") or None,
        size=parse_size(args.get("size")),
    )
    config = ServeConfig(
        service,
        token=settings.api_token(),
        replicas=int(args.get("replicas") or 1),
        max_replicas=int(args["max_replicas"]) if args.get("max_replicas") else None,
        cpus=int(args["cpus"]) if args.get("cpus") else None,
    )
    return application(config)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def serve_on_ray(config: ServeConfig, address: str, host: str, port: int) -> int:
    """Runs the application until SIGTERM or Ctrl-C: on a local Ray instance started (and stopped)
    here, or on the cluster at `address`, from which only this application is removed on exit."""
    import ray

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    local = address == "local"
    ray.init(include_dashboard=False) if local else ray.init(address=address)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application(config), name=APP_NAME, route_prefix="/")
        routes = "POST /api/remove, POST /v1.0/removebg, GET /api/models, /health, /livez, /readyz, /metrics"
        log.info("API on http://%s:%d/ (Ray Serve): %s", host, port, routes)
        _wait_for_signal()
    finally:
        if local:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete(APP_NAME)
    return 0
