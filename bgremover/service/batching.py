"""Micro-batching: concurrent requests for one model and size share one forward pass.

A GPU runs a batch of eight in little more time than one image, so a busy server gets
the batched throughput if requests that arrive together are inferred together. The
first request to arrive leads: it waits up to `window` seconds (or until `max_batch`
requests are there), runs them as one batch, and hands each its mask; requests that
arrive meanwhile wait for the next batch, whose leader is the first of them. A lone
request waits at most the window. On a CPU a batch costs as much as its images one by
one, so there the window is 0 and every request is its own batch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from PIL import Image

from ..pipeline import Remover, Timings


@dataclass
class _Slot:
    image: Image.Image
    mask: Image.Image | None = None
    error: BaseException | None = None
    done: bool = False
    leads: bool = False
    batch: int = 0
    timings: Timings = field(default_factory=Timings)


class MicroBatcher:
    """Gathers concurrent `predict` calls for one Remover into batches of up to `max_batch`."""

    def __init__(self, remover: Remover, window: float, max_batch: int):
        self.remover = remover
        self.window = window
        self.max_batch = max_batch
        self._changed = threading.Condition()
        self._pending: list[_Slot] = []
        self._leading = False

    def predict(self, image: Image.Image, timings: Timings) -> tuple[Image.Image, int]:
        """The mask of `image`, inferred in a batch with whatever arrives within the window, and the
        batch's size (the server reports it, so that a client can see whether batching happens)."""
        slot = _Slot(image)
        with self._changed:
            self._pending.append(slot)
            if self._leading:
                self._changed.wait_for(lambda: slot.done or slot.leads)
            if not slot.done:
                self._leading = True
        if not slot.done:
            self._lead()
        timings.queue += slot.timings.queue
        timings.infer += slot.timings.infer
        if slot.error is not None:
            raise slot.error
        return slot.mask, slot.batch

    def _lead(self) -> None:
        deadline = time.perf_counter() + self.window
        with self._changed:
            self._changed.wait_for(
                lambda: len(self._pending) >= self.max_batch, max(0.0, deadline - time.perf_counter())
            )
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        shared = Timings()
        try:
            masks = self.remover.predict([slot.image for slot in batch], shared)
        except BaseException as error:  # every request of the batch learns why, and the next batch still runs
            masks = [None] * len(batch)
            for slot in batch:
                slot.error = error
        with self._changed:
            for slot, mask in zip(batch, masks, strict=True):
                slot.mask, slot.done, slot.batch = mask, True, len(batch)
                slot.timings.queue, slot.timings.infer = shared.queue, shared.infer
            self._leading = bool(self._pending)
            if self._pending:
                self._pending[0].leads = True
            self._changed.notify_all()
