"""One `ServiceConfig` and one `build_service`: how every front end gets its removal service.

The CLI, the web server, eval, `bench --e2e`, the Ray batch actors and the Ray Serve replicas
all run the same service; before this module each assembled it from its own mix of
arguments, and a setting one of them forgot (`--engine` in three) was silently dropped.
Now a front end reads its options and the environment once into a `ServiceConfig` and
hands that to `build_service`. The config is a frozen, picklable value, so Ray ships the
driver's settings to its workers instead of each worker reading its own environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .. import settings
from .admission import Admission
from .options import parse_size

if TYPE_CHECKING:  # PyTorch is imported only where a service is built: Ray's decode workers never load it
    from .removal import RemovalService

# Where a bad value came from, for the error message: the option and the environment variable.
_SOURCES = {
    "model": "--model / RMBG_MODEL",
    "device": "--device / RMBG_DEVICE",
    "precision": "--precision",
    "runtime": "--engine / RMBG_ENGINE",
    "size": "--size",
    "max_pixels": "--max-pixels / RMBG_MAX_PIXELS",
    "workers": "RMBG_WORKERS",
    "queue_limit": "RMBG_QUEUE_LIMIT",
    "pixel_budget": "RMBG_PIXEL_BUDGET_MP",
    "batch_window": "RMBG_BATCH_WINDOW_MS",
    "max_batch": "RMBG_MAX_BATCH",
    "io_threads": "RMBG_IO_THREADS",
    "max_upload": "RMBG_MAX_UPLOAD_MB",
}


@dataclass(frozen=True)
class ServiceConfig:
    """Everything that decides what a removal service loads and how much work it takes on; a field
    not given comes from the environment (`settings`, the one reader of environment variables),
    read when the config is made. Ray unpickles it as it is, without reading a worker's environment.

    `runtime` is what `--engine` / RMBG_ENGINE name (auto, torch, openvino); an engine is the
    loaded object. `batch_window` is in seconds, None for the device's default (5 ms on a GPU,
    off on a CPU), which is only known once the device is.
    """

    model: str = field(default_factory=settings.model)
    device: str = field(default_factory=settings.device)
    precision: str = "auto"
    runtime: str = field(default_factory=settings.engine)
    size: int | None = None
    max_pixels: int = field(default_factory=settings.max_pixels)
    workers: int = field(default_factory=settings.workers)
    queue_limit: int = field(default_factory=settings.queue_limit)
    pixel_budget: int = field(default_factory=settings.pixel_budget)
    batch_window: float | None = field(default_factory=settings.batch_window_setting)
    max_batch: int = field(default_factory=settings.max_batch)
    io_threads: int = field(default_factory=settings.io_threads)
    max_upload: int = field(default_factory=settings.max_upload_bytes)  # bytes; servers only
    model_note: str = ""  # why this model is served where nobody chose it (service.defaults), for a banner

    def __post_init__(self) -> None:
        from ..engines import ENGINES, PRECISIONS

        self._check(bool(str(self.model).strip()), "model", "name a model (see `rmbg models`)")
        self._check(bool(str(self.device).strip()), "device", "use auto, cpu, cuda or cuda:N")
        precisions = ", ".join(("auto", *PRECISIONS))
        self._check(self.precision in ("auto", *PRECISIONS), "precision", f"use {precisions}")
        self._check(self.runtime in ENGINES, "runtime", f"use {', '.join(ENGINES)}")
        for name in ("max_pixels", "workers", "pixel_budget", "max_batch", "io_threads", "max_upload"):
            self._check(_whole(getattr(self, name)) and getattr(self, name) >= 1, name, "use a whole number above 0")
        self._check(_whole(self.queue_limit) and self.queue_limit >= 0, "queue_limit", "use 0 or more")
        window_ok = self.batch_window is None or self.batch_window >= 0
        self._check(window_ok, "batch_window", "use 0 (off) or a number of milliseconds")
        try:
            parse_size(self.size)
        except ValueError as error:
            raise ValueError(f"{_SOURCES['size']}: {error}") from None

    def _check(self, ok: bool, name: str, fix: str) -> None:
        if not ok:
            raise ValueError(f"{_SOURCES[name]}={getattr(self, name)!r} is not usable: {fix}.")

    @classmethod
    def from_settings(cls, **chosen: object) -> ServiceConfig:
        """The config from what a front end was told (`chosen`, where None means "not given", as an
        option left out of a command line) and, for the rest, the environment. A model neither given
        nor in RMBG_MODEL is RMBG-2.0 where it can be had, else an open model (`service.defaults`);
        that is decided once the other settings have passed their checks."""
        config = cls(**{name: value for name, value in chosen.items() if value is not None})
        if chosen.get("model") is not None or settings.chosen_model() is not None:
            return config
        from .defaults import default_model  # the hub, and PyTorch with it

        picked = default_model()
        return replace(config, model=picked.name, model_note=picked.note)

    def with_model(self, model: str) -> ServiceConfig:
        """The same settings for another model (eval runs several)."""
        return replace(self, model=model)

    def batch_window_for(self, device_type: str) -> float:
        """Seconds a server gathers concurrent requests into one batch on a device of `device_type`."""
        if self.batch_window is not None:
            return self.batch_window
        return settings.default_batch_window(device_type)

    def concurrent_requests(self, device_type: str) -> int:
        """Requests processed at once: `workers`, raised to `max_batch` where requests are batched,
        since a batch can only gather requests that were let in."""
        if self.batch_window_for(device_type) > 0:
            return max(self.workers, self.max_batch)
        return self.workers


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_admission(config: ServiceConfig, device_type: str) -> Admission:
    """How much work a server takes on at once on a device of `device_type`."""
    return Admission(config.concurrent_requests(device_type), config.queue_limit, config.pixel_budget)


def build_service(
    config: ServiceConfig, serving: bool = False, service_type: type[RemovalService] | None = None
) -> RemovalService:
    """The pool (device resolved once, engine and precision checked before any load), the
    admission a server needs (`serving`; batch runs bound themselves) and the service over them.

    `service_type` lets Ray Serve's replicas batch through Serve instead of `MicroBatcher`.
    """
    from ..engines import pick_device
    from .pool import ModelPool
    from .removal import RemovalService

    device = pick_device(config.device)
    pool = ModelPool(config.model, device, config.precision, config.size, config.runtime, config.model_note)
    admission = build_admission(config, device.type) if serving else None
    return (service_type or RemovalService)(
        pool,
        max_pixels=config.max_pixels,
        io_threads=config.io_threads,
        admission=admission,
        batch_window=config.batch_window_for(device.type),
        max_batch=config.max_batch,
    )
