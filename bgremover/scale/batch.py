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

import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..imaging import decoding
from ..results import Timings
from ..service.config import ServiceConfig
from ..service.options import RemovalRequest
from ..service.steps import decode_input, finish_and_encode
from .locations import Location, Task, existing, is_uri, plan, read_bytes, write_bytes

MANIFEST_NAME = "rmbg-manifest.jsonl"
# A batch whose actor died is retried on the restarted actor this often; an input that kills
# its actor every time (a segfault in a decoder, say) then fails the job instead of looping.
MAX_TASK_RETRIES = 3
# A CPU actor's memory beyond its weights (see `estimated_actor_memory`): the runtime and its libraries, and
# the activations of one 1024² forward, both rounded up from BENCHMARKS.md's peaks.
ACTOR_RUNTIME_BYTES = 768 * 2**20
ACTIVATION_BYTES_AT_1024 = 768 * 2**20
Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class InferenceConfig:
    """What each inference actor loads (the driver's service settings, its device settled to cpu or
    cuda); `threads` is PyTorch's thread count on CPU actors."""

    service: ServiceConfig
    threads: int | None = None


@dataclass(frozen=True)
class RayRun:
    """What `rmbg remove --ray` was asked for besides the service: inputs, outputs and the cluster."""

    inputs: list[str]
    out: str | None
    fmt: str
    address: str
    overwrite: bool = False
    manifest: str | None = None
    quiet: bool = False
    batch_size: int = 1
    actors: int | None = None


@dataclass(frozen=True)
class RayConfig:
    """The pipeline's shape: images per forward, actors, and the decode limit."""

    inference: InferenceConfig
    batch_size: int = 1
    actors: int = 1
    actor_cpus: float = 1.0
    gpus_per_actor: float = 0.0
    actor_memory_bytes: int = 0
    max_pixels: int | None = None

    def summary(self) -> str:
        """What the job runs, for the terminal: the default actor count is worked out per cluster."""
        line = f"Ray: {self.actors} inference actor(s) on {self.inference.service.device}"
        if self.inference.threads:
            line += f", {self.inference.threads} thread(s) each"
        if self.actor_memory_bytes:
            line += f", {self.actor_memory_bytes / 2**30:.1f} GiB of memory reserved each"
        return line + " (--ray-actors N to change)"


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


# --- The pipeline ----------------------------------------------------------------------------------


def _row(task: Task) -> dict[str, str]:
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


def build_dataset(tasks: list[Task], request: RemovalRequest, config: RayConfig, inference: type = Inference):
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


class Manifest:
    """The run's report as JSON Lines (input, output, status ok|failed|skipped, error, seconds, the engine
    that inferred it), rewritten by each run and flushed after every block: a stopped run says what it did."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("w", encoding="utf-8")
        self.counts: Counter[str] = Counter()

    def add(self, rows: Iterable[dict]) -> None:
        for row in rows:
            record = {key: row[key] for key in ("input", "output", "status")}
            record.update(error=row.get("error") or None, seconds=round(float(row.get("seconds", 0.0)), 4))
            record["engine"] = row.get("engine") or None
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.counts[row["status"]] += 1
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def report(self, unit: str = "") -> int:
        """The closing line of a Ray run (`unit`: what was counted, e.g. "clip(s) "), and its exit status."""
        print(
            f"{self.counts['ok']} {unit}done, {self.counts['skipped']} skipped (already there; --overwrite redoes "
            f"them), {self.counts['failed']} failed; manifest: {self.path}",
            file=sys.stderr,
        )
        return 1 if self.counts["failed"] else 0


@dataclass(frozen=True)
class ModelCheck:
    """What a node found of the model: why it cannot be had (None when it can), and, when it can,
    the checkpoint's size and the model's input side, from which a CPU actor's memory is estimated."""

    problem: str | None
    checkpoint_bytes: int = 0
    input_size: int = 1024


def check_on_node(model: str) -> ModelCheck:
    """The model's checkpoint on this node: cached, or downloaded now."""
    from .. import hub

    try:
        info = hub.resolve(model)
        return ModelCheck(None, hub.checkpoint_file(info).stat().st_size, info.input_size)
    except hub.ModelLoadError as error:
        return ModelCheck(str(error))


def check_model(model: str, here: bool) -> ModelCheck:
    """Fetches the checkpoint once before any actor starts, so that a model that cannot be had costs
    one message (exit status 2, as in `rmbg remove`) instead of a trace per actor, and actors on
    that node do not all download it at once.

    `here`: the workers are a local instance this process started, with its environment and disk,
    so this process checks, and the job need not wait for a worker process to start first.
    Otherwise a task checks on a node of the cluster, with that node's environment (HF_HOME,
    HF_HUB_OFFLINE), as the actors will load it.
    """
    import ray

    from ..hub import ModelLoadError

    found = check_on_node(model) if here else ray.get(ray.remote(num_cpus=0)(check_on_node).remote(model))
    if found.problem:
        raise ModelLoadError(found.problem)
    return found


def remove_on_ray(
    tasks: list[Task],
    request: RemovalRequest,
    config: RayConfig,
    manifest: Manifest,
    inference: type = Inference,
) -> None:
    """Runs `tasks` on the connected Ray cluster, adding each finished block's rows to `manifest`."""
    for block in build_dataset(tasks, request, config, inference).iter_batches(batch_size=None, batch_format="pyarrow"):
        rows = block.to_pylist()
        manifest.add(rows)
        for row in rows:
            if row["status"] == "failed":
                print(f"failed: {row['error']}", file=sys.stderr)


# --- The command -----------------------------------------------------------------------------------


@contextmanager
def connected(address: str, quiet: bool = False) -> Iterator[bool]:
    """Ray for one run: the cluster at `address`, or a local instance ('local') stopped afterwards;
    gives whether it is a local instance started here, whose workers share this process's environment.

    A process that is already connected (a notebook, the tests) keeps its connection.
    """
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = not quiet
    if ray.is_initialized():
        yield False
        return
    if address == "local":
        ray.init(include_dashboard=False, log_to_driver=not quiet)
    else:
        ray.init(address=address, log_to_driver=not quiet)
    try:
        yield address == "local"
    finally:
        ray.shutdown()


def estimated_actor_memory(found: ModelCheck, size: int | None) -> int:
    """A CPU actor's peak memory in bytes, estimated on the high side of the peaks measured for the
    zoo's models (BENCHMARKS.md): the runtime, twice the checkpoint (the network, and room for the
    copies that loading and the fast path make), and activations that grow with the input's area."""
    area = ((size or found.input_size) / 1024) ** 2
    return int(ACTOR_RUNTIME_BYTES + 2 * found.checkpoint_bytes + ACTIVATION_BYTES_AT_1024 * area)


def cpu_actors_that_fit(nodes: list[dict], memory: int) -> int:
    """One actor per CPU of each live node, as many as the node's memory holds: single-threaded
    actors side by side outrun one actor with every thread (docs/scale.md)."""
    fits = 0
    for node in nodes:
        resources = node.get("Resources", {}) if node.get("Alive") else {}
        fits += min(int(resources.get("CPU", 0)), int(resources.get("memory", 0) // memory))
    return fits


def configure(config: ServiceConfig, run: RayRun, found: ModelCheck, batches: int) -> RayConfig:
    """The pipeline for the connected cluster: GPU actors when the device asks for CUDA (or is
    `auto` and the cluster has GPUs), CPU actors otherwise, each CPU actor with its share of threads.

    Without --ray-actors a GPU job takes every GPU of the cluster, one actor each (a model per
    device), and a CPU job one actor per CPU that the nodes' memory can hold a model for; each
    such actor reserves its estimated memory, so that Ray never places more on a node than fit.
    CPU actors reserve less than a whole CPU when they would otherwise take every CPU, because
    the decode and finish tasks need one to run at all. A default count never exceeds the job's
    `batches`: an actor with nothing to do would only load a model.
    """
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    on_gpus = config.device.startswith("cuda") or (config.device == "auto" and gpus >= 1)
    if run.actors is not None and run.actors < 1:
        raise UsageError("--ray-actors must be at least 1")
    memory = estimated_actor_memory(found, config.size)
    fits = 0 if on_gpus or run.actors else cpu_actors_that_fit(ray.nodes(), memory)
    actors = run.actors or min(max(1, int(gpus) if on_gpus else fits), max(1, batches))
    if on_gpus and gpus < actors:
        raise UsageError(f"{actors} GPU actor(s) asked for, but the Ray cluster has {gpus:g} GPU(s)")
    common = {"batch_size": run.batch_size, "actors": actors, "max_pixels": config.max_pixels}
    if on_gpus:
        # An actor sees its one GPU as cuda:0.
        return RayConfig(InferenceConfig(replace(config, device="cuda")), gpus_per_actor=1.0, **common)
    inference = InferenceConfig(replace(config, device="cpu"), threads=max(1, int(cpus // actors)))
    cpu_share = min(1.0, max(cpus - 1.0, 0.5) / actors)
    return RayConfig(inference, actor_cpus=cpu_share, actor_memory_bytes=memory if fits else 0, **common)


def manifest_path(run: RayRun) -> Path:
    """--manifest, else rmbg-manifest.jsonl in the local output folder, else in the current folder."""
    if run.manifest:
        return Path(run.manifest)
    if run.out and not is_uri(run.out):
        out = Path(run.out)
        return (out.parent if out.suffix and not out.is_dir() else out) / MANIFEST_NAME
    return Path(MANIFEST_NAME)


def _skipped(task: Task) -> dict:
    return {"input": str(task.source), "output": str(task.target), "status": "skipped", "seconds": 0.0}


def run_on_ray(run: RayRun, config: ServiceConfig, request: RemovalRequest) -> int:
    """`rmbg remove --ray`: plans like `rmbg remove`, runs the rest on Ray, prints the same summary."""
    tasks = plan(run.inputs, run.out, run.fmt)
    done = set() if run.overwrite else existing(task.target for task in tasks)
    todo = [task for task in tasks if task.target not in done]
    manifest = Manifest(manifest_path(run))
    try:
        manifest.add(_skipped(task) for task in tasks if task.target in done)
        if todo:
            with connected(run.address, run.quiet) as local:
                batches = batch_count(len(todo), run.batch_size)
                ray_config = configure(config, run, check_model(config.model, here=local), batches)
                if not run.quiet:
                    print(ray_config.summary(), file=sys.stderr)
                remove_on_ray(todo, request, ray_config, manifest)
    finally:
        manifest.close()
    return manifest.report()
