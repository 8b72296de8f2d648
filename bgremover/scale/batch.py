"""`rmbg remove --ray`: the job of `rmbg remove`, spread over a Ray cluster with Ray Data.

Three stages, so that the device only ever infers:

1. decode (CPU tasks): read each file (local disk or a pyarrow filesystem) and decode it
   with the service's own `decode_input`, limits and messages included;
2. infer (an actor pool, one model per actor; one GPU per actor when the device is CUDA):
   `Remover.predict` on batches of --batch-size images;
3. finish (CPU tasks): the service's `finish_and_encode`, then an atomic write. Only the
   manifest row goes back to the driver, never the image.

Images travel to the actor as arrays of pixels (Arrow has no type for a PIL image; an array
column is not pickled, as bytes objects are), and the actor sends back only the mask: a
12 MP photo's pixels passing through the actor's one thread, in and out, cost it more time
than a GPU forward (BENCHMARKS.md, Scale-out). The finish stage decodes the file's
bytes again, from the copy the decode stage read, so the input is read once and decoded by
the same code both times.

This module imports no PyTorch (the actor imports it in its constructor): every worker that runs
a decode or finish task imports this module, and would otherwise load PyTorch for nothing.

Planning, resuming and safety are those of `rmbg remove`: the same output names, outputs
that exist are skipped unless --overwrite, an output never replaces its input, and a file
that cannot be read or decoded is a failed row in the manifest, not a failed job. A task
that dies or is retried never leaves a half file (`locations.write_bytes`), and the
manifest is written by the driver from the stage's results, so a retried task cannot add a
row twice.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from ..imaging import decoding
from ..planning import Location, PlannedFile
from ..results import Timings
from ..service.config import ServiceConfig
from ..service.options import RemovalRequest
from ..service.steps import decode_input, finish_and_encode
from .cluster import InferenceConfig, Manifest, RayConfig, RayRun, drive, skipped_row
from .locations import existing, plan, read_bytes, write_bytes

# A batch whose actor died is retried on the restarted actor this often; an input that kills
# its actor every time (a segfault in a decoder, say) then fails the job instead of looping.
MAX_TASK_RETRIES = 3
Batch = dict[str, np.ndarray]


# --- The stages ----------------------------------------------------------------------------------


def _column(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _read_and_decode(source: Location, label: str, max_pixels: int | None) -> dict:
    try:
        data = read_bytes(source)
    except OSError as error:
        return {"error": f"{label}: cannot read the file ({error.strerror or error})."}
    try:
        decoded = decode_input(data, label, max_pixels=max_pixels)
    except decoding.ImageError as error:
        return {"error": str(error)}
    return {"pixels": np.asarray(decoded.rgb), "data": data}


def decode_stage(batch: Batch, max_pixels: int | None) -> Batch:
    """Stage 1: each row's file read and decoded; a bad file becomes the row's `error`."""
    rows = []
    for source, base, label in zip(batch["source"], batch["source_base"], batch["label"], strict=True):
        started = time.perf_counter()
        row = {"pixels": _NO_PIXELS, "data": b"", "error": ""}
        row.update(_read_and_decode(Location(source, base), label, max_pixels))
        rows.append({**row, "seconds": time.perf_counter() - started})
    for key in ("pixels", "data", "error"):
        batch[key] = _column([row[key] for row in rows])
    batch["seconds"] = np.array([row["seconds"] for row in rows], dtype=np.float64)
    return batch


# The pixels and the mask of a row that failed: empty, of the same number of dimensions as the others.
_NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)
_NO_MASK = np.zeros((0, 0), dtype=np.uint8)


class Inference:
    """Stage 2, an actor: one model, loaded once, inferring batch after batch."""

    def __init__(self, config: InferenceConfig):
        import torch

        from ..service.config import build_service

        if config.threads:
            torch.set_num_threads(config.threads)
        self.remover = build_service(config.service).pool.get()
        self.engine = self.remover.engine.describe()  # the runtime that ran, for the manifest

    def __call__(self, batch: Batch) -> Batch:
        """The batch with each row's mask instead of its pixels."""
        ready = [index for index, error in enumerate(batch["error"]) if not error]
        timings, pixels = Timings(), batch.pop("pixels")
        masks = self.remover.predict([Image.fromarray(pixels[index]) for index in ready], timings)
        column = [_NO_MASK] * len(batch["error"])
        seconds = np.array(batch["seconds"], dtype=np.float64)
        for index, mask in zip(ready, masks, strict=True):
            column[index] = np.asarray(mask)
            seconds[index] += (timings.infer + timings.queue) / len(ready)
        batch["mask"], batch["seconds"] = _column(column), seconds
        batch["engine"] = _column([self.engine] * len(column))
        return batch


def _finish_row(batch: Batch, index: int, request: RemovalRequest) -> tuple[str, str]:
    """(status, error) of one row, its output written if all went well."""
    label, target = batch["label"][index], Location(batch["target"][index], batch["target_base"][index])
    if batch["error"][index]:
        return "failed", batch["error"][index]
    decoded = decode_input(batch["data"][index], label)  # decoded before, so it decodes again
    _, data = finish_and_encode(decoded, Image.fromarray(batch["mask"][index]), request, Timings())
    try:
        write_bytes(target, data)
    except OSError as error:
        return "failed", f"{label}: cannot write {target} ({error.strerror or error}). Check the output folder."
    return "ok", ""


def finish_stage(batch: Batch, request: RemovalRequest) -> Batch:
    """Stage 3: each row finished, encoded and written; only its manifest row is passed on."""
    statuses, errors, seconds = [], [], []
    for index in range(len(batch["label"])):
        started = time.perf_counter()
        status, error = _finish_row(batch, index, request)
        statuses.append(status)
        errors.append(error)
        seconds.append(float(batch["seconds"][index]) + time.perf_counter() - started)
    return {
        "input": _column([str(Location(p, b)) for p, b in zip(batch["source"], batch["source_base"], strict=True)]),
        "output": _column([str(Location(p, b)) for p, b in zip(batch["target"], batch["target_base"], strict=True)]),
        "label": batch["label"],
        "status": _column(statuses),
        "error": _column(errors),
        "engine": batch["engine"],
        "seconds": np.array(seconds, dtype=np.float64),
    }


# --- The pipeline and the command ------------------------------------------------------------------


def _row(task: PlannedFile) -> dict[str, str]:
    return {
        "source": task.source.path,
        "source_base": task.source.base,
        "target": task.target.path,
        "target_base": task.target.base,
        "label": task.label,
    }


def batch_count(tasks: int, batch_size: int) -> int:
    """The batches (at least one) that `tasks` inputs make: the dataset's blocks, and the most actors a
    default configuration starts."""
    return max(1, -(-tasks // batch_size))


def build_dataset(tasks: list[PlannedFile], request: RemovalRequest, config: RayConfig, inference: type = Inference):
    """The three stages as one lazy Ray Dataset of manifest rows; `inference` is the actor class."""
    import ray

    blocks = batch_count(len(tasks), config.batch_size)  # a block per batch: the manifest grows as they finish
    dataset = ray.data.from_items([_row(task) for task in tasks], override_num_blocks=blocks)
    dataset = dataset.map_batches(decode_stage, fn_kwargs={"max_pixels": config.max_pixels}, batch_size=None)
    dataset = dataset.map_batches(
        inference,
        fn_constructor_kwargs={"config": config.inference},
        batch_size=config.batch_size,
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=config.actor_cpus,
        num_gpus=config.gpus_per_actor,
        memory=config.actor_memory_bytes or None,
        # Explicit (Ray Data's defaults for actor pools are the same restarts and unbounded retries):
        # these also keep Ray from fusing decoding into the actors, which would put it on the device's clock.
        max_restarts=-1,
        max_task_retries=MAX_TASK_RETRIES,
    )
    return dataset.map_batches(finish_stage, fn_kwargs={"request": request}, batch_size=None)


def remove_on_ray(
    tasks: list[PlannedFile],
    request: RemovalRequest,
    config: RayConfig,
    manifest: Manifest,
    inference: type = Inference,
) -> None:
    """Runs `tasks` on the connected Ray cluster, adding each finished block's rows to `manifest`."""
    for block in build_dataset(tasks, request, config, inference).iter_batches(batch_size=None, batch_format="pyarrow"):
        manifest.add(block.to_pylist())


def run_on_ray(run: RayRun, config: ServiceConfig, request: RemovalRequest) -> int:
    """`rmbg remove --ray`: plans like `rmbg remove`, runs the rest on Ray, prints the same summary."""
    tasks = plan(run.inputs, run.out, run.fmt)
    done = set() if run.overwrite else existing(task.target for task in tasks)
    todo = [task for task in tasks if task.target not in done]
    skipped = [skipped_row(task.source, task.target) for task in tasks if task.target in done]
    batches = batch_count(len(todo), run.batch_size) if todo else 0
    return drive(
        run, config, skipped, batches, lambda ray_config, manifest: remove_on_ray(todo, request, ray_config, manifest)
    )
