"""The removal use case: decode, infer, finish, encode; the one request path of every front end.

Only inference holds the device (the engine's lock, taken inside `Remover.predict`);
decoding, compositing and encoding run outside it, so a queued request's inference
starts while the previous one is still being encoded. `remove_many` goes further for
batch work: worker threads (one per core by default) decode the next batches and finish
and encode the last ones while the device infers, so the device never waits for PNG
compression.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .. import estimates
from ..imaging import decoding
from ..pipeline import Remover, Result, Timings
from .admission import Admission, charged_pixels
from .batching import MicroBatcher
from .options import RemovalRequest
from .pool import ModelPool
from .steps import decode_input, finish_and_encode


@dataclass
class Item:
    """One input of a batch: its name (for messages and output names), its bytes or path, a rotation."""

    name: str
    source: bytes | str | Path
    turns: int = 0


@dataclass
class Removal:
    """The outcome for one input: the encoded file, its result and the upright input, or why it failed."""

    name: str
    data: bytes | None = None
    result: Result | None = None
    original: Image.Image | None = None
    error: str | None = None
    timings: Timings = field(default_factory=Timings)
    model: str = ""
    size: int = 0
    batch: int = 1  # images inferred in the same forward pass as this one


class RemovalService:
    """Runs requests against the models of a `ModelPool`; shared by the API, the UI, the CLI and eval."""

    def __init__(
        self,
        pool: ModelPool,
        *,
        max_pixels: int,
        io_threads: int,
        batch_window: float,
        max_batch: int,
        admission: Admission | None = None,
    ):
        """`admission` bounds concurrent single requests (servers); batch runs bound themselves, on
        `io_threads` worker threads. Concurrent single requests for one model and size are gathered
        into micro-batches of up to `max_batch` where `batch_window` (seconds) is above 0.

        Every value is given, never read here: front ends get them from one `ServiceConfig`, which
        resolved the environment, through `config.build_service`.
        """
        self.pool = pool
        self.max_pixels = max_pixels
        self.io_threads = io_threads
        self.admission = admission
        self.batch_window = batch_window
        self.max_batch = max_batch
        self._batchers: dict[tuple[str, int], MicroBatcher] = {}
        self._batchers_guard = threading.Lock()
        self.observers: list[Callable[[Removal], None]] = []  # told of every single removal (server metrics)

    def sharing_pool(self, **changed: object) -> RemovalService:
        """This service with some settings `changed` over the same pool, no model loaded twice: what
        comparisons (batching on and off, fewer I/O threads) in tests and tools/ measure against."""
        settled = {name: getattr(self, name) for name in ("max_pixels", "io_threads", "batch_window", "max_batch")}
        return type(self)(self.pool, admission=self.admission, **(settled | changed))

    def decode(self, source: bytes | str | Path, name: str = "image", turns: int = 0) -> decoding.Decoded:
        """Decodes an input with this service's pixel limit; raises ImageError with the fix."""
        return decode_input(source, name, turns, self.max_pixels)

    def remover(self, request: RemovalRequest, wait: bool = True) -> Remover:
        return self.pool.get(request.model, request.size, wait=wait)

    def remove(
        self, source: bytes | str | Path, request: RemovalRequest, name: str = "image", wait: bool = True
    ) -> Removal:
        """One image end to end. Raises ImageError for a bad input, ModelLoadError for a model that
        cannot run (ModelNotReady with `wait=False` while it loads), and Busy when admission refuses.

        The time spent waiting for admission counts as `timings.queue`, like the wait for the device.
        """
        timings = Timings()
        remover = self.remover(request, wait)
        if self.admission is None:
            removal = self._remove(remover, source, request, name, timings)
        else:
            with self.admission.admit(charged_pixels(decoding.pixel_count(source), request)) as waited:
                timings.queue += waited
                removal = self._remove(remover, source, request, name, timings)
        for observe in self.observers:
            observe(removal)
        return removal

    def _remove(
        self, remover: Remover, source: bytes | str | Path, request: RemovalRequest, name: str, timings: Timings
    ) -> Removal:
        with timings.stage("decode"):
            decoded = self.decode(source, name)
        batcher = self._batcher(remover)
        if batcher is not None:
            mask, batch = batcher.predict(decoded.rgb, timings)
        else:
            mask, batch = remover.predict([decoded.rgb], timings)[0], 1
        return self._finish_and_encode(remover, decoded, mask, request, timings, batch)

    def _batcher(self, remover: Remover) -> MicroBatcher | None:
        if self.batch_window <= 0:
            return None
        key = (remover.info.name, remover.inference_size)
        with self._batchers_guard:
            if key not in self._batchers:
                self._batchers[key] = MicroBatcher(remover, self.batch_window, self.max_batch)
            return self._batchers[key]

    def remove_many(self, items: Iterable[Item], request: RemovalRequest, batch_size: int = 1) -> Iterator[Removal]:
        """Removals in input order; an unreadable input becomes a Removal with its `error`, and the rest go on.

        The worker threads get enough work to stay busy while the device infers, and no more: the
        images decoded ahead and those in progress or finished but not handed out yet are bounded
        by the thread count and the batch size, never by the number of inputs.
        """
        remover = self.remover(request)
        batch_size = max(batch_size, 1)
        threads = self.io_threads
        batches = _chunks(iter(items), batch_size)
        ahead = -(-threads // batch_size)  # batches decoding at once: a decode for every thread
        kept = max(2 * batch_size, threads)  # outputs in progress or waiting: finishing work for every thread
        with ThreadPoolExecutor(threads, thread_name_prefix="rmbg-io") as workers:
            outputs: deque[Future[Removal]] = deque()
            decoding_ahead = deque(self._decode_batches(workers, batches, ahead))
            try:
                while decoding_ahead:
                    current = decoding_ahead.popleft()
                    decoding_ahead.extend(self._decode_batches(workers, batches, 1))
                    outputs.extend(self._infer_batch(workers, remover, request, current))
                    while len(outputs) > kept:
                        yield outputs.popleft().result()
            except GeneratorExit:  # the consumer stopped: nothing more to hand out
                raise
            except BaseException:  # Ctrl-C or an error: the images already inferred are still handed out
                yield from _drain(outputs)
                raise
            yield from _drain(outputs)

    def _decode_batches(
        self, workers: ThreadPoolExecutor, batches: Iterator[list[Item]], count: int
    ) -> list[list[tuple[Item, Future, Timings]]]:
        """The next `count` batches, their decoding started."""
        return [self._decode_batch(workers, batch) for batch in itertools.islice(batches, count)]

    def _decode_batch(self, workers: ThreadPoolExecutor, items: list[Item]) -> list[tuple[Item, Future, Timings]]:
        decoding_jobs = []
        for item in items:
            timings = Timings()
            decoding_jobs.append((item, workers.submit(self._timed_decode, item, timings), timings))
        return decoding_jobs

    def _timed_decode(self, item: Item, timings: Timings) -> decoding.Decoded:
        with timings.stage("decode"):
            return self.decode(item.source, item.name, item.turns)

    def _infer_batch(
        self,
        workers: ThreadPoolExecutor,
        remover: Remover,
        request: RemovalRequest,
        batch: list[tuple[Item, Future, Timings]],
    ) -> list[Future[Removal]]:
        """One forward for the batch's decodable images; finishing and encoding go to the workers."""
        outputs: list[Future[Removal]] = []
        ready = []
        for item, job, timings in batch:
            try:
                ready.append((len(outputs), job.result(), timings))
                outputs.append(Future())
            except decoding.ImageError as error:
                outputs.append(_done(Removal(item.name, error=str(error), timings=timings)))
        shared = Timings()
        masks = remover.predict([decoded.rgb for _, decoded, _ in ready], shared)
        for (index, decoded, timings), mask in zip(ready, masks, strict=True):
            timings.queue, timings.infer = shared.queue / len(ready), shared.infer / len(ready)
            outputs[index] = workers.submit(
                self._finish_and_encode, remover, decoded, mask, request, timings, len(ready)
            )
        return outputs

    def _finish_and_encode(
        self,
        remover: Remover,
        decoded: decoding.Decoded,
        mask: Image.Image,
        request: RemovalRequest,
        timings: Timings,
        batch: int,
    ) -> Removal:
        result, data = finish_and_encode(decoded, mask, request, timings, remover.device)
        work = timings.decode + timings.infer + timings.finish + timings.encode  # not the wait for the device
        estimates.record(remover.info.name, remover.device, remover.inference_size, work)
        return Removal(
            result.name,
            data,
            result,
            decoded.rgb,
            timings=timings,
            model=remover.info.name,
            size=remover.inference_size,
            batch=batch,
        )


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _drain(outputs: deque[Future[Removal]]) -> Iterator[Removal]:
    while outputs:
        yield outputs.popleft().result()


def _done(removal: Removal) -> Future[Removal]:
    future: Future[Removal] = Future()
    future.set_result(removal)
    return future
