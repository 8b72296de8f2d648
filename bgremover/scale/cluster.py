"""The cluster side of the Ray runs (images in `scale.batch`, clips in `scale.clips`): what a run
was asked for, the model checked once before any actor starts, how many actors the connected
cluster holds and what each reserves, the connection itself, and the manifest the driver writes.

Like `scale.batch`, this module imports neither PyTorch nor Ray at import time: Ray's workers
import it with the stages, and the driver imports Ray only once connecting.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UsageError
from ..planning import FileRun
from ..service.config import ServiceConfig
from .locations import is_uri

MANIFEST_NAME = "rmbg-manifest.jsonl"
# A CPU actor's memory beyond its weights (see `estimated_actor_memory`): the runtime and its libraries, and
# the activations of one 1024² forward, both rounded up from BENCHMARKS.md's peaks.
ACTOR_RUNTIME_BYTES = 768 * 2**20
ACTIVATION_BYTES_AT_1024 = 768 * 2**20


@dataclass(frozen=True)
class InferenceConfig:
    """What each inference actor loads (the driver's service settings, its device settled to cpu or
    cuda); `threads` is PyTorch's thread count on CPU actors."""

    service: ServiceConfig
    threads: int | None = None


@dataclass(frozen=True, kw_only=True)
class RayRun(FileRun):
    """What `rmbg remove --ray` was asked for besides the service: the files (`FileRun`), the
    cluster's address, the actors and the manifest."""

    address: str
    manifest: str | None = None
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


class Manifest:
    """The run's report as JSON Lines (input, output, status ok|failed|skipped, error, seconds, the engine
    that inferred it), rewritten by each run and flushed after every block: a stopped run says what it did.
    A failed row is also printed as it comes, so the terminal shows it before the run ends."""

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
            if row["status"] == "failed":
                print(f"failed: {row['error']}", file=sys.stderr)
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


def skipped_row(source: object, target: object) -> dict:
    """The manifest row of an input whose output is already there."""
    return {"input": str(source), "output": str(target), "status": "skipped", "seconds": 0.0}


def drive(
    run: RayRun,
    config: ServiceConfig,
    skipped: Iterable[dict],
    batches: int,
    work: Callable[[RayConfig, Manifest], None],
    actors: str = "inference actor(s)",
    unit: str = "",
) -> int:
    """The driver's side of a Ray run, images or clips: the manifest (its `skipped` rows first) and,
    where there is work (`batches` above 0), the cluster connected, the model checked once and the
    actors sized before `work` runs; then the run's summary line, and its exit status."""
    manifest = Manifest(manifest_path(run))
    try:
        manifest.add(skipped)
        if batches:
            with connected(run.address, run.quiet) as local:
                ray_config = configure(config, run, check_model(config.model, here=local), batches)
                if not run.quiet:
                    print(ray_config.summary().replace("inference actor(s)", actors), file=sys.stderr)
                work(ray_config, manifest)
    finally:
        manifest.close()
    return manifest.report(unit)
