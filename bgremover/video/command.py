"""`rmbg remove clip.mp4 -o out.webm` and folders of clips: one clip after another through the
service, each with its own progress bar, a failed clip reported and the rest going on.

Like every front end (docs/architecture.md, "One config, one builder"), it gets a `ServiceConfig`
for the service and a `ClipRun` for the rest from `remove_command.py`, never the argparse namespace."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import estimates
from ..errors import UsageError
from ..imaging.decoding import IMAGE_SUFFIXES
from ..planning import STDIO, PlannedFile, check_not_overwriting, plan_files
from ..service.config import ServiceConfig, build_service
from ..service.options import RemovalRequest
from ..service.removal import RemovalService
from . import CLIP_FORMATS, VIDEO_SUFFIXES, Cancelled, ClipRun, VideoError, check_format, check_options, default_format
from .clip import remove_clip
from .reading import ClipInfo, Limits, check_span, probe
from .smoothing import check_strength


def video_format(run: ClipRun) -> str:
    """--format when it names a container, else -o's suffix (one clip), else the output kind's default."""
    if run.fmt in CLIP_FORMATS:
        return check_format(run.fmt, run.output)
    suffix = Path(run.out).suffix.lower().lstrip(".") if run.out else ""
    if suffix in CLIP_FORMATS:
        return check_format(suffix, run.output)
    return default_format(run.output)


def plan_clips(run: ClipRun, fmt: str) -> list[PlannedFile]:
    if STDIO in run.inputs or run.out == STDIO:
        raise UsageError("clips are read from and written to files: stdin and stdout (-) take images only")
    clips = plan_files(run.inputs, run.out, fmt, VIDEO_SUFFIXES)
    for clip in clips:
        if Path(clip.source.path).suffix.lower() in IMAGE_SUFFIXES:
            raise UsageError(f"{clip.source} is an image and the other inputs are clips: run images and clips apart")
    check_not_overwriting(clips)
    return clips


def plan_run(run: ClipRun, request: RemovalRequest) -> tuple[list[PlannedFile], str]:
    """The clips of `run` and their container, every option checked before any model loads (the Ray
    run, `scale.clips`, plans through this too)."""
    fmt = video_format(run)
    check_strength(run.smoothing)
    try:
        check_span(run.start, run.end, 0.0, "--start/--end")
        check_options(fmt, run.output, request.options.crop)
        return plan_clips(run, fmt), fmt
    except VideoError as error:
        raise UsageError(str(error)) from None


def run_video(run: ClipRun, config: ServiceConfig, request: RemovalRequest) -> int:
    """Every planned clip; exit status 1 when any failed (each named with why), 0 otherwise."""
    clips, fmt = plan_run(run, request)
    todo = [clip for clip in clips if run.overwrite or not Path(clip.target.path).exists()]
    readable, failures = _probed(todo, run.quiet)
    ran = ""
    if readable:
        service = build_service(config)
        engine = service.pool.get().engine  # load (or fail) before any clip is decoded
        failures += [error for clip, info in readable if (error := _one_clip(service, clip, info, request, fmt, run))]
        ran = f"; {engine.info.name} on {engine.describe()}"
    skipped = len(clips) - len(todo)
    print(
        f"{len(todo) - len(failures)} clip(s) done, {skipped} skipped (already there; --overwrite redoes them), "
        f"{len(failures)} failed{ran}",
        file=sys.stderr,
    )
    for failure in failures if len(failures) > 1 else []:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _probed(clips: list[PlannedFile], quiet: bool) -> tuple[list[tuple[PlannedFile, ClipInfo]], list[str]]:
    """Each clip's header read (and checked against the limits) before any model loads: the
    readable clips with what they hold, and the message of each that is not, printed once."""
    limits, readable, failures = Limits.from_settings(), [], []
    for clip in clips:
        try:
            readable.append((clip, probe(Path(clip.source.path), clip.label, limits)))
        except (VideoError, OSError) as error:
            failures.append(str(error) if isinstance(error, VideoError) else f"{clip.label}: {error}")
            print(f"failed: {failures[-1]}", file=sys.stderr)
    return readable, failures


def _one_clip(
    service: RemovalService, clip: PlannedFile, info: ClipInfo, request: RemovalRequest, fmt: str, run: ClipRun
) -> str | None:
    """Removes one clip; the message of a failure the user can fix, or None. The bar's postfix
    says what this machine's past runs expect until the clip's own frames give tqdm its rate."""
    from tqdm import tqdm

    past = estimates.past_run(service.remover(request), "frame")
    with tqdm(total=info.frames, unit="frame", desc=Path(clip.label).name, disable=run.quiet, file=sys.stderr) as bar:
        if past is not None:
            bar.set_postfix_str(f"about {estimates.describe(past * info.frames)} (past runs)")

        def progress(done: int, expected: int) -> None:
            bar.total = expected
            bar.set_postfix_str("", refresh=False)  # tqdm's own rate and time left take over
            bar.update(done - bar.n)

        try:
            remove_clip(
                service,
                Path(clip.source.path),
                Path(clip.target.path),
                request,
                progress=progress,
                name=clip.label,
                **run.clip_options(fmt),
            )
        except (VideoError, Cancelled, OSError) as error:
            message = str(error) if not isinstance(error, OSError) else f"{clip.label}: {error}"
            bar.write(f"failed: {message}", file=sys.stderr)
            return message
    return None
