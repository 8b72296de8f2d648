"""What carrying 12 MP photos through a Ray Data actor costs, with no inference (BENCHMARKS.md, Scale-out).

    python3 tools/ray_transfer.py 48 bytes    # pixels and masks as bytes objects, as `rmbg remove --ray` carries them
    python3 tools/ray_transfer.py 48 ragged   # as ndarrays of two shapes (Ray's variable-shaped tensor columns)

The pipeline has the batch job's shape: a task makes each photo's RGB pixels (zeros), a
one-actor pool adds a 12 MP mask in place of inference, a last task keeps only the row id.
Each mode runs three ways: the pixels passing through the actor (in and out, as the job
carried them before), into the actor only (dropped from its output, as the job does now),
and dropped before it (the cost of everything but the pixels).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import ray

PHOTOS = int(sys.argv[1]) if len(sys.argv) > 1 else 48
MODE = sys.argv[2] if len(sys.argv) > 2 else "bytes"
WIDTH, HEIGHT = 4032, 3024


def _shape(row: int, channels: int) -> tuple[int, ...]:
    """Landscape and portrait photos in turn, so that ndarray columns have varying shapes."""
    size = (HEIGHT, WIDTH) if row % 2 else (WIDTH, HEIGHT)
    return (*size, channels) if channels > 1 else size


def _column(rows: np.ndarray, channels: int) -> np.ndarray:
    column = np.empty(len(rows), dtype=object)
    if MODE == "bytes":
        column[:] = [bytes(WIDTH * HEIGHT * channels) for _ in rows]
    else:
        column[:] = [np.zeros(_shape(row, channels), dtype=np.uint8) for row in rows]
    return column


def decode(batch: dict) -> dict:
    return batch | {"pixels": _column(batch["id"], 3)}


def without_pixels(batch: dict) -> dict:
    return {"id": batch["id"]}


class Infer:
    def __init__(self, keep_pixels: bool):
        self.keep_pixels = keep_pixels

    def __call__(self, batch: dict) -> dict:
        if not self.keep_pixels:
            batch.pop("pixels", None)
        return batch | {"mask": _column(batch["id"], 1)}


def finish(batch: dict) -> dict:
    return {"id": batch["id"]}


def rate(route: str) -> float:
    dataset = ray.data.range(PHOTOS, override_num_blocks=PHOTOS).map_batches(decode, batch_size=None)
    if route == "kept out":
        dataset = dataset.map_batches(without_pixels, batch_size=None)
    # max_restarts, as in the batch job, also keeps Ray from fusing the decode task into the actor.
    pool, arguments = ray.data.ActorPoolStrategy(size=1), {"keep_pixels": route == "through"}
    dataset = dataset.map_batches(
        Infer, fn_constructor_kwargs=arguments, batch_size=1, compute=pool, max_restarts=-1, max_task_retries=3
    )
    started = time.perf_counter()
    dataset.map_batches(finish, batch_size=None).take_all()
    return PHOTOS / (time.perf_counter() - started)


if __name__ == "__main__":
    ray.init(include_dashboard=False, log_to_driver=False)
    rates = ", ".join(f"{route} {rate(route):.2f}/s" for route in ("through", "in only", "kept out"))
    print(f"{MODE}, {PHOTOS} photos, pixels {rates}")
