"""`rmbg remove clips/ --ray`: one clip per Ray actor, each actor a model and the whole clip
pipeline of `remove_clip` (decode, infer, finish, encode on that node).

One clip per actor rather than frames spread over actors: a clip's frames must be encoded in
order into one file, so spreading them would send every frame's pixels across the cluster and
back to one writer, while a clip per actor moves nothing but the paths. A clip is the unit of
work and of retry; a folder of clips keeps every actor busy. Inputs and outputs are paths that
every node sees (a shared disk), since encoders write files, not object-store streams.

Planning, skipping finished clips, the manifest and the actor count are those of the image run
(`scale.batch`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError
from ..planning import Job
from ..scale.batch import InferenceConfig, Manifest, RayConfig, check_model, configure, connected, manifest_path
from ..service.options import Request


class ClipActor:
    """An actor: one model loaded once, clip after clip through `remove_clip`."""

    def __init__(self, config: InferenceConfig):
        import torch

        from ..service.pool import ModelPool
        from ..service.removal import RemovalService

        if config.threads:
            torch.set_num_threads(config.threads)
        self.service = RemovalService(ModelPool(config.model, config.device, config.precision, config.size))

    def remove(self, job: Job, request: Request, options: dict) -> dict:
        """The manifest row of one clip (`options`: remove_clip's fmt, batch_size and smoothing); a bad
        clip is a failed row, not a failed actor."""
        from . import Cancelled, VideoError
        from .clip import remove_clip

        started = time.perf_counter()
        row = {"input": str(job.source), "output": str(job.target), "status": "ok", "error": None}
        try:
            source, target = Path(job.source), Path(job.target)
            report = remove_clip(self.service, source, target, request, name=job.label, **options)
            row["frames"] = report.frames
        except (VideoError, Cancelled, OSError) as error:
            row.update(status="failed", error=str(error))
        row["seconds"] = time.perf_counter() - started
        return row


def run_clips_on_ray(args: argparse.Namespace, request: Request, jobs: list[Job], fmt: str) -> int:
    """Runs the clips that are not done yet on Ray and prints the summary of `rmbg remove --ray`."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UsageError("--ray needs ray, which is not installed: pip install 'bgremover[ray]'")
    if any("://" in str(value) for value in [*args.inputs, args.out or ""]):
        raise UsageError("clips on Ray are read and written on a shared disk: object-store URIs take images only")
    todo = [job for job in jobs if args.overwrite or not Path(job.target).exists()]
    manifest = Manifest(manifest_path(args))
    try:
        manifest.add(_row(job, "skipped") for job in jobs if job not in todo)
        if todo:
            with connected(args.ray, args.quiet) as local:
                config = configure(args, check_model(args.model, here=local), len(todo))
                if not args.quiet:
                    print(config.summary().replace("inference actor(s)", "clip actor(s)"), file=sys.stderr)
                options = {"fmt": fmt, "batch_size": args.batch_size, "smoothing": args.smooth}
                for row in _rows(config, request, options, todo):
                    manifest.add([row])
                    if row["status"] == "failed":
                        print(f"failed: {row['error']}", file=sys.stderr)
    finally:
        manifest.close()
    counts = manifest.counts
    print(
        f"{counts['ok']} clip(s) done, {counts['skipped']} skipped (already there; --overwrite redoes them), "
        f"{counts['failed']} failed; manifest: {manifest.path}",
        file=sys.stderr,
    )
    return 1 if counts["failed"] else 0


def _rows(config: RayConfig, request: Request, options: dict, todo: list[Job]) -> Iterator[dict]:
    """The manifest rows of `todo`, as the actors finish them."""
    import ray
    from ray.util import ActorPool

    resources = {"num_cpus": config.actor_cpus, "num_gpus": config.gpus_per_actor, "max_restarts": 1}
    if config.actor_memory_bytes:
        resources["memory"] = config.actor_memory_bytes
    actor = ray.remote(**resources)(ClipActor)
    pool = ActorPool([actor.remote(config.inference) for _ in range(config.actors)])
    yield from pool.map_unordered(lambda each, job: each.remove.remote(job, request, options), todo)


def _row(job: Job, status: str) -> dict:
    return {"input": str(job.source), "output": str(job.target), "status": status, "seconds": 0.0}
