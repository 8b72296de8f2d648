"""`rmbg remove clip.mp4 -o out.webm` and folders of clips: one clip after another through the
service, each with its own progress bar, a failed clip reported and the rest going on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from ..imaging.decoding import IMAGE_SUFFIXES
from ..planning import STDIO, Job, plan_jobs
from ..service.options import Request
from ..service.pool import ModelPool
from ..service.removal import RemovalService
from . import VIDEO_FORMATS, VIDEO_SUFFIXES, Cancelled, VideoError, check_format, default_format
from .clip import remove_clip
from .smoothing import check_strength


def video_format(args: argparse.Namespace) -> str:
    """--format when it names a container, else -o's suffix (one clip), else the output kind's default."""
    if args.format in VIDEO_FORMATS:
        return check_format(args.format, args.output)
    suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
    if suffix in VIDEO_FORMATS:
        return check_format(suffix, args.output)
    return default_format(args.output)


def plan_clips(args: argparse.Namespace, fmt: str) -> list[Job]:
    if STDIO in args.inputs or args.out == STDIO:
        raise UsageError("clips are read from and written to files: stdin and stdout (-) take images only")
    jobs = plan_jobs(args.inputs, args.out, fmt, VIDEO_SUFFIXES)
    for job in jobs:
        if Path(job.source).suffix.lower() in IMAGE_SUFFIXES:
            raise UsageError(f"{job.source} is an image and the other inputs are clips: run images and clips apart")
        if Path(job.target).resolve() == Path(job.source).resolve():
            raise UsageError(f"{job.source}: the output would overwrite the input; choose another -o or --format")
    return jobs


def run_video(args: argparse.Namespace, request: Request) -> int:
    """Every planned clip; exit status 1 when any failed (each named with why), 0 otherwise."""
    fmt = video_format(args)
    check_strength(args.smooth)
    try:
        jobs = plan_clips(args, fmt)
    except VideoError as error:
        raise UsageError(str(error)) from None
    if args.ray is not None:
        from .on_ray import run_clips_on_ray

        return run_clips_on_ray(args, request, jobs, fmt)
    todo = [job for job in jobs if args.overwrite or not Path(job.target).exists()]
    service = RemovalService(ModelPool(args.model, args.device, args.precision, args.size, args.engine))
    engine = service.pool.get().engine  # load (or fail) before any clip is read
    failures = [error for job in todo if (error := _one_clip(service, job, request, fmt, args))]
    skipped = len(jobs) - len(todo)
    print(
        f"{len(todo) - len(failures)} clip(s) done, {skipped} skipped (already there; --overwrite redoes them), "
        f"{len(failures)} failed; {engine.info.name} on {engine.describe()}",
        file=sys.stderr,
    )
    for failure in failures if len(failures) > 1 else []:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _one_clip(service: RemovalService, job: Job, request: Request, fmt: str, args: argparse.Namespace) -> str | None:
    """Removes one clip; the message of a failure the user can fix, or None."""
    from tqdm import tqdm

    with tqdm(total=0, unit="frame", desc=Path(job.label).name, disable=args.quiet, file=sys.stderr) as bar:

        def progress(done: int, expected: int) -> None:
            bar.total = expected
            bar.update(done - bar.n)

        try:
            remove_clip(
                service,
                Path(job.source),
                Path(job.target),
                request,
                fmt=fmt,
                batch_size=args.batch_size,
                progress=progress,
                name=job.label,
                smoothing=args.smooth,
            )
        except (VideoError, Cancelled, OSError) as error:
            message = str(error) if not isinstance(error, OSError) else f"{job.label}: {error}"
            bar.write(f"failed: {message}", file=sys.stderr)
            return message
    return None
