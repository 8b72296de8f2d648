"""`service/batching.py` on its own: a real `Remover` and `TorchEngine` shared by real threads, no server.

The network is one seeded 3x3 convolution with RMBG-1.4's processing: batching does not depend on
what the network computes, and a zoo network would make these thread tests take a minute.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from bgremover import zoo
from bgremover.engines.pytorch import TorchEngine
from bgremover.pipeline import Remover, Timings
from bgremover.service.batching import MicroBatcher


@pytest.fixture(scope="module")
def remover() -> Remover:
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, 1, 3, padding=1).eval()
    return Remover(TorchEngine(network, zoo.ZOO["RMBG-1.4"], "3x3 convolution"), inference_size=32)


def _concurrently(batcher: MicroBatcher, images: list[Image.Image]) -> list[tuple[Image.Image, int]]:
    """Every image's `predict` from its own thread, all released at once; results in input order."""
    results: list = [None] * len(images)
    start = threading.Barrier(len(images))

    def one(index: int) -> None:
        start.wait()
        results[index] = batcher.predict(images[index], Timings())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_requests_gather_within_the_window_and_never_exceed_the_max_batch(remover) -> None:
    images = [Image.new("RGB", (40 + i, 30 + i), (i * 30, 90, 200)) for i in range(7)]
    results = _concurrently(MicroBatcher(remover, window=1.0, max_batch=3), images)
    sizes = [batch for _, batch in results]
    assert max(sizes) <= 3, sizes
    assert sizes.count(3) >= 3, sizes  # seven requests at once: full batches, not one by one
    for size in set(sizes):
        assert sizes.count(size) % size == 0, sizes  # each batch hands a mask to every member
    for image, (mask, _) in zip(images, results, strict=True):
        assert mask.mode == "L" and mask.size == image.size  # each request gets its own image's mask


def test_a_batch_gives_the_masks_one_by_one_inference_gives(remover) -> None:
    images = [Image.new("RGB", (48, 36), colour) for colour in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    alone = remover.predict(images[:1]) + remover.predict(images[1:2]) + remover.predict(images[2:])
    batched = _concurrently(MicroBatcher(remover, window=2.0, max_batch=3), images)
    assert [batch for _, batch in batched] == [3, 3, 3]
    for single, (mask, _) in zip(alone, batched, strict=True):
        difference = np.asarray(single, dtype=np.int16) - np.asarray(mask, dtype=np.int16)
        assert np.abs(difference).max() <= 1


def test_a_lone_request_waits_at_most_the_window(remover) -> None:
    batcher = MicroBatcher(remover, window=0.3, max_batch=8)
    started = time.perf_counter()
    mask, batch = batcher.predict(Image.new("RGB", (32, 32)), Timings())
    elapsed = time.perf_counter() - started
    assert batch == 1 and mask.size == (32, 32)
    assert 0.3 <= elapsed < 0.3 + 5.0


def test_without_a_window_every_request_is_its_own_batch(remover) -> None:
    timings = Timings()
    mask, batch = MicroBatcher(remover, window=0.0, max_batch=8).predict(Image.new("RGB", (20, 10)), timings)
    assert batch == 1 and mask.size == (20, 10)
    assert timings.infer > 0


def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_still_runs(remover) -> None:
    batcher = MicroBatcher(remover, window=0.0, max_batch=8)
    with pytest.raises(ValueError):  # what the pipeline raised reaches the caller
        batcher.predict(Image.new("RGB", (0, 0)), Timings())
    mask, batch = batcher.predict(Image.new("RGB", (16, 16)), Timings())
    assert batch == 1 and mask.size == (16, 16)
