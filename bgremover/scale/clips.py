"""`rmbg remove clips/ --ray`: one clip per Ray actor, each actor a model and the whole clip
pipeline of `remove_clip` (decode, infer, finish, encode on that node).

One clip per actor rather than frames spread over actors: a clip's frames must be encoded in
order into one file, so spreading them would send every frame's pixels across the cluster and
back to one writer, while a clip per actor moves nothing but the paths. A clip is the unit of
work and of retry; a folder of clips keeps every actor busy. Inputs and outputs are paths that
every node sees (a shared disk), since encoders write files, not object-store streams.

Planning is that of `rmbg remove clip.mp4` (`video.command.plan_clips`); skipping finished clips,
the manifest and the actor count are those of the image run (`scale.cluster`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError
from ..planning import PlannedFile
from ..service.config import ServiceConfig
from ..service.options import RemovalRequest
from ..video import ClipRun
from .cluster import InferenceConfig, Manifest, RayConfig, RayRun, drive, skipped_row


class ClipActor:
    """An actor: one model loaded once, clip after clip through `remove_clip`; its service is built
    from the driver's `ServiceConfig`, as the image run's `Inference` actors build theirs."""

    def __init__(self, config: InferenceConfig):
        import torch

        from ..service.config import build_service

        if config.threads:
            torch.set_num_threads(config.threads)
        self.service = build_service(config.service)
        self.engine = self.service.pool.get().engine.describe()  # the runtime that ran, for the manifest

    def remove(self, clip: PlannedFile, request: RemovalRequest, options: dict) -> dict:
        """The manifest row of one clip (`options`: remove_clip's, from `ClipRun.clip_options`); a bad
        clip is a failed row, not a failed actor."""
        from ..video import Cancelled, VideoError
        from ..video.clip import remove_clip

        started = time.perf_counter()
        row = {
            "input": str(clip.source),
            "output": str(clip.target),
            "status": "ok",
            "error": None,
            "engine": self.engine,
        }
        try:
            source, target = Path(clip.source.path), Path(clip.target.path)
            report = remove_clip(self.service, source, target, request, name=clip.label, **options)
            row["frames"] = report.frames
        except (VideoError, Cancelled, OSError) as error:
            row.update(status="failed", error=str(error))
        row["seconds"] = time.perf_counter() - started
        return row


def run_clips_on_ray(run: ClipRun, ray_run: RayRun, config: ServiceConfig, request: RemovalRequest) -> int:
    """Runs the clips that are not done yet on Ray (`ray_run`: the cluster, --ray-actors, --manifest)
    and prints the summary of `rmbg remove --ray`; clips are planned and checked as without Ray."""
    from ..video.command import plan_run

    clips, fmt = plan_run(run, request)
    if any("://" in str(value) for value in [*run.inputs, run.out or ""]):
        raise UsageError("clips on Ray are read and written on a shared disk: object-store URIs take images only")
    todo = [clip for clip in clips if run.overwrite or not Path(clip.target.path).exists()]
    skipped = [skipped_row(clip.source, clip.target) for clip in clips if clip not in todo]
    options = run.clip_options(fmt)

    def work(ray_config: RayConfig, manifest: Manifest) -> None:
        for row in _rows(ray_config, request, options, todo):
            manifest.add([row])

    return drive(ray_run, config, skipped, len(todo), work, actors="clip actor(s)", unit="clip(s) ")


def _rows(config: RayConfig, request: RemovalRequest, options: dict, todo: list[PlannedFile]) -> Iterator[dict]:
    """The manifest rows of `todo`, as the actors finish them."""
    import ray
    from ray.util import ActorPool

    resources = {"num_cpus": config.actor_cpus, "num_gpus": config.gpus_per_actor, "max_restarts": 1}
    if config.actor_memory_bytes:
        resources["memory"] = config.actor_memory_bytes
    actor = ray.remote(**resources)(ClipActor)
    pool = ActorPool([actor.remote(config.inference) for _ in range(config.actors)])
    yield from pool.map_unordered(lambda each, clip: each.remove.remote(clip, request, options), todo)
