"""`rmbg remove`: its options, and the choice of run they make: clips (`video.command`, or
`scale.clips` with --ray), images on Ray (`scale.batch`) or images here (`runs`). Each run gets a
`ServiceConfig` and its own `FileRun`, never the namespace.

Light to import, as every module the parser is built from: PyTorch, PyAV and Ray load once a run starts.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from .arguments import add_model_arguments, add_ray_address, check_model_name, require, service_config
from .choices import COMPRESSIONS, OUTPUT_FORMATS, OUTPUTS
from .errors import UsageError
from .planning import FileRun
from .runs import noted
from .video import CLIP_FORMATS, wants_video
from .video.quality import QUALITIES

if TYPE_CHECKING:
    from .scale.cluster import RayRun
    from .service.config import ServiceConfig
    from .service.options import RemovalRequest


def color_argument(text: str) -> tuple[int, int, int]:
    from .imaging import composing

    try:
        return composing.parse_color(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_remove_command(commands) -> None:
    parser = commands.add_parser("remove", help="remove the background of files, folders, globs or stdin")
    parser.add_argument("inputs", nargs="*", help="image files, folders (recursive), globs, or - for stdin")
    parser.add_argument("-o", "--out", help="output file (one input), folder, or - for stdout")
    add_model_arguments(parser, falls_back=True)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="images (or frames) inferred together: faster on a GPU, no faster on a CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        choices=OUTPUTS,
        default="cutout",
        help="cutout: the subject on transparency; mask: the greyscale mask; color: over --bg-color; "
        "image: over --bg-image (default: %(default)s)",
    )
    parser.add_argument("--bg-color", type=color_argument, default=(255, 255, 255), help="for --output color")
    parser.add_argument("--bg-image", type=Path, help="for --output image (cover-fitted)")
    parser.add_argument("--threshold", type=float, help="0-1: make the mask binary at this level")
    parser.add_argument("--crop", action="store_true", help="crop to the subject's bounding box")
    parser.add_argument("--crop-margin", type=int, default=0, help="pixels kept around the subject with --crop")
    parser.add_argument("--refine-edges", action="store_true", help="estimate foreground colours at soft edges")
    parser.add_argument(
        "--keep-hidden-color",
        action="store_true",
        help="cut-outs: keep the photo's colour where alpha is 0 (zeroed by default: it is the removed background)",
    )
    parser.add_argument(
        "--format",
        choices=tuple(dict.fromkeys((*OUTPUT_FORMATS, *CLIP_FORMATS))),
        default="png",
        help="images: png, webp or jpeg (jpeg has no transparency); clips: webm, mov, zip (transparent), mp4, "
        "or an animated webp or gif (default: png, or a clip's -o suffix)",
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="fast",
        help="PNG/WebP: fast to write, or smaller files that take longer (default: %(default)s)",
    )
    parser.add_argument("--smooth", type=float, default=0.0, help="clips: 0-1, steadier masks where nothing moves")
    parser.add_argument(
        "--quality", choices=QUALITIES, default="standard", help="clips: the encoder preset (default: %(default)s)"
    )
    parser.add_argument("--start", type=float, default=0.0, help="clips: the in point, in seconds")
    parser.add_argument("--end", type=float, default=None, help="clips: the out point, in seconds (default: the end)")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    parser.add_argument("--max-pixels", type=int, default=None, help="refuse larger images (default: RMBG_MAX_PIXELS)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or hints")
    _add_ray_remove(parser)
    parser.set_defaults(handler=run_remove)


def _add_ray_remove(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (pip install 'bgremover[ray]'; see docs/scale.md)")
    add_ray_address(
        group,
        "run on Ray: a local instance, or ADDRESS auto / ray://HOST:10001 / HOST:6379; "
        "inputs and -o may then also be s3://, gs:// or file:// URIs",
    )
    group.add_argument(
        "--ray-actors",
        type=int,
        help="inference actors, one model each (default: one per GPU on GPUs; on CPUs one per CPU that memory holds)",
    )
    group.add_argument("--manifest", help="JSON Lines report of the run (default: OUT/rmbg-manifest.jsonl)")


def _request(args: argparse.Namespace, fmt: str) -> RemovalRequest:
    """The removal options of `rmbg remove`; `fmt` is the image format of each output (clips pass
    png, the format of their frames, since --format there names a container)."""
    from .imaging import decoding
    from .service.options import build_request

    background = None
    if args.bg_image:
        background = decoding.decode(args.bg_image, max_pixels=args.max_pixels).rgb
    named = ("output", "bg_color", "threshold", "crop", "crop_margin", "refine_edges", "keep_hidden_color")
    return build_request(bg_image=background, fmt=fmt, compression=args.compression, **_picked(args, named))


def _ray_address(args) -> str | None:
    """`--ray` takes an optional ADDRESS, so `--ray photos/` would take the folder for one: a value
    that does not look like an address (auto, local, ray://..., HOST:PORT) is an input."""
    value = args.ray
    if value is None or value in ("auto", "local") or value.startswith("ray://") or re.fullmatch(r"[\w.-]+:\d+", value):
        return value
    args.inputs.insert(0, value)
    return "local"


def _picked(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    return {name: getattr(args, name) for name in names}


def file_run(args: argparse.Namespace) -> dict:
    """The `FileRun` fields of the command line, which image, clip and Ray runs all take."""
    files = (tuple(args.inputs), args.out, args.format, args.overwrite, args.quiet, args.batch_size)
    return dict(zip((field.name for field in fields(FileRun)), files, strict=True))


def ray_run(args: argparse.Namespace) -> RayRun | None:
    """What --ray asks for besides the service (None without --ray), for images and clips alike."""
    if args.ray is None:
        return None
    require("ray", "ray", "requirements-ray.txt")
    from .scale.cluster import RayRun

    return RayRun(**file_run(args), address=args.ray, manifest=args.manifest, actors=args.ray_actors)


def _run_clips(args: argparse.Namespace, config: ServiceConfig, on_ray: RayRun | None) -> int:
    """A clip run: its own `ClipRun` beside the one `ServiceConfig`, as images have `RayRun`."""
    require("video", "av", "requirements-video.txt")
    from .video import ClipRun
    from .video.command import run_video

    clip = {"smoothing": args.smooth, "quality": args.quality, "start": args.start, "end": args.end}
    run = ClipRun(**file_run(args), output=args.output, **clip)
    config = noted(config, args.quiet)
    if on_ray is not None:
        from .scale.clips import run_clips_on_ray

        return run_clips_on_ray(run, on_ray, config, _request(args, "png"))
    return run_video(run, config, _request(args, "png"))


def run_remove(args) -> int:
    args.ray = _ray_address(args)
    if not args.inputs:
        raise UsageError("give at least one input: image files, folders, globs, or - for stdin")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    check_model_name(args.model)
    config = service_config(args)
    on_ray = ray_run(args)
    if wants_video(args.inputs, args.out, args.format):
        return _run_clips(args, config, on_ray)
    request = _request(args, args.format)
    if on_ray is not None:
        from .scale.batch import run_on_ray

        return run_on_ray(on_ray, noted(config, args.quiet), request)
    from .runs import run_images

    return run_images(FileRun(**file_run(args)), config, request)
