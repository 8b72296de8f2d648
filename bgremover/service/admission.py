"""How much work a server takes on at once, so that load and large images wait or are refused
instead of exhausting memory.

At most `workers` requests are processed at a time (two by default: one on the device while
another decodes or encodes), and only while the pixels they hold stay within a budget; a
request larger than the budget runs alone. The budget counts pixels at 16 bytes each, and each
request is charged what its options really take (`charged_pixels`), so that the budget bounds
memory whatever the options. At most `max_waiting` more wait for their turn;
beyond that a request is refused at once (`Busy`, which the API sends as 503 with
Retry-After), so clients back off instead of piling up behind a queue they cannot see.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .options import RemovalRequest

# RMBG_PIXEL_BUDGET_MP counts pixels at this many bytes each (docs/web.md, "Memory").
BUDGET_BYTES_PER_PIXEL = 16
# Peak bytes per pixel of its image that a request needs over an idle server, by output kind,
# and what each option adds: measured on 49 MP inputs with tools/memory_per_pixel.py and
# rounded up (docs/web.md, "Memory"). Any input mode costs the same: 16-bit and CMYK inputs
# are converted to 8-bit RGB while they are decoded.
OUTPUT_BYTES_PER_PIXEL = {"mask": 16, "cutout": 20, "color": 22, "image": 22}
WEBP_BYTES_PER_PIXEL = 5  # libwebp's own ARGB copy of the output
CROP_BYTES_PER_PIXEL = 6  # the cropped copies of the output and its mask
# Edge refinement's arrays and its RGBA result (19 measured at most, issue #36 saw 50.7 against
# 49.5 charged once), and the copy that zeroing its hidden colour makes (results.finish: the
# refined cut-out is a read-only view of its array, so it is copied once, 4 bytes a pixel).
REFINE_BYTES_PER_PIXEL = 23
THRESHOLD_BYTES_PER_PIXEL = 1  # the hard mask beside the soft one


class Busy(RuntimeError):
    """Too many requests are already waiting; `retry_after` is a hint in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Admission:
    def __init__(self, workers: int, max_waiting: int, pixel_budget: int):
        """The limits as `ServiceConfig` resolved them (`config.build_admission`)."""
        self.workers = workers
        self.max_waiting = max_waiting
        self.pixel_budget = pixel_budget
        self.draining = False
        self._changed = threading.Condition()
        self._running = 0
        self._waiting = 0
        self._pixels = 0

    def _fits(self, pixels: int) -> bool:
        if self._running >= self.workers:
            return False
        return self._running == 0 or self._pixels + pixels <= self.pixel_budget

    @contextmanager
    def admit(self, pixels: int) -> Iterator[float]:
        """Holds a place for one request of `pixels` pixels and gives the seconds it waited for it;
        raises Busy when the queue is full or the server is draining."""
        asked = time.perf_counter()
        with self._changed:
            if self.draining:
                raise Busy("the server is shutting down; send the request again in a moment.", 5)
            if not self._fits(pixels) and self._waiting >= self.max_waiting:
                raise Busy(
                    f"the server is busy: {self._running} request(s) running and {self._waiting} waiting "
                    f"(RMBG_QUEUE_LIMIT={self.max_waiting}). Try again shortly.",
                    retry_after=max(5, 5 * self._waiting),
                )
            self._waiting += 1
            try:
                self._changed.wait_for(lambda: self._fits(pixels))
            finally:
                self._waiting -= 1
            self._running += 1
            self._pixels += pixels
        try:
            yield time.perf_counter() - asked
        finally:
            with self._changed:
                self._running -= 1
                self._pixels -= pixels
                idle = self._running == 0
                self._changed.notify_all()
            if idle:
                give_back_memory()

    def load(self) -> tuple[int, int]:
        """Requests running and waiting now (for rate-limit headers and metrics)."""
        with self._changed:
            return self._running, self._waiting

    def idle(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds until nothing runs or waits; whether that happened."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0 and self._waiting == 0, timeout)


_libc = None


def give_back_memory() -> None:
    """Returns freed heap memory to the operating system (glibc's malloc_trim), so a server's
    resident size falls back after a large image instead of staying at its peak."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name else False
    trim = getattr(_libc, "malloc_trim", None) if _libc else None
    if trim is not None:
        trim(0)


def bytes_per_pixel(request: RemovalRequest) -> int:
    """Peak bytes per pixel of its image that `request` needs over an idle server."""
    options = request.options
    cost = OUTPUT_BYTES_PER_PIXEL[options.output]
    cost += WEBP_BYTES_PER_PIXEL if request.fmt == "webp" else 0
    cost += CROP_BYTES_PER_PIXEL if options.crop else 0
    cost += REFINE_BYTES_PER_PIXEL if options.refine_edges and options.output != "mask" else 0
    cost += THRESHOLD_BYTES_PER_PIXEL if options.threshold is not None else 0
    return cost


def charged_pixels(pixels: int, request: RemovalRequest) -> int:
    """What admission counts for an image of `pixels` under `request`'s options: its pixels at
    the budget's 16 bytes each, so a request that needs 32 bytes a pixel counts twice its size."""
    return -(-pixels * bytes_per_pixel(request) // BUDGET_BYTES_PER_PIXEL)
