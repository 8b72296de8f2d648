"""Command line: `rmbg [serve]`, `rmbg remove`, `rmbg models`, `rmbg download`, `rmbg bench`, `rmbg eval`.

Commands are thin: they parse arguments and hand over to the pipeline, the hub
loader or the web app. Errors the user can fix are printed as one line, not a trace.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import settings
from .arguments import DEVICE_HELP, ENGINE_OPTION_HELP, add_bench_arguments, add_eval_arguments
from .choices import COMPRESSIONS, ENGINES, OUTPUT_FORMATS, OUTPUTS, PRECISION_HELP
from .errors import ChildFailed, UsageError
from .video import VIDEO_FORMATS, wants_video

# Only light modules above: the parser and every `--help` are built without PyTorch, Gradio or Ray,
# which each handler imports when its work starts.
if TYPE_CHECKING:
    from .planning import Job
    from .scale.batch import RayRun
    from .service.config import ServiceConfig
    from .service.options import RemovalRequest
    from .service.removal import Item


def color_argument(text: str) -> tuple[int, int, int]:
    from .imaging import composing

    try:
        return composing.parse_color(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=settings.model(),
        help="zoo name (see `models`), Hub repo id, folder or .safetensors file (default: %(default)s)",
    )
    parser.add_argument("--device", help=DEVICE_HELP)
    parser.add_argument("--precision", default="auto", help=PRECISION_HELP)
    parser.add_argument("--engine", choices=ENGINES, help=ENGINE_OPTION_HELP)
    parser.add_argument("--size", type=int, default=None, help="inference size, a multiple of 32 (default: model's)")


def service_config(args: argparse.Namespace) -> ServiceConfig:
    """The one place a command's options become service settings (the environment gives the rest);
    below the command line only this config travels, never the namespace."""
    from .service.config import ServiceConfig

    return ServiceConfig.from_settings(
        model=args.model,
        device=args.device,
        precision=args.precision,
        runtime=args.engine,
        size=args.size,
        max_pixels=getattr(args, "max_pixels", None),
    )


def _add_remove(commands) -> None:
    parser = commands.add_parser("remove", help="remove the background of files, folders, globs or stdin")
    parser.add_argument("inputs", nargs="*", help="image files, folders (recursive), globs, or - for stdin")
    parser.add_argument("-o", "--out", help="output file (one input), folder, or - for stdout")
    add_model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--output", choices=OUTPUTS, default="cutout")
    parser.add_argument("--bg-color", type=color_argument, default=(255, 255, 255), help="for --output color")
    parser.add_argument("--bg-image", type=Path, help="for --output image (cover-fitted)")
    parser.add_argument("--threshold", type=float, help="0-1: make the mask binary at this level")
    parser.add_argument("--crop", action="store_true", help="crop to the subject's bounding box")
    parser.add_argument("--crop-margin", type=int, default=0, help="pixels kept around the subject with --crop")
    parser.add_argument("--refine-edges", action="store_true", help="estimate foreground colours at soft edges")
    parser.add_argument("--format", choices=(*OUTPUT_FORMATS, *VIDEO_FORMATS), default="png")
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="fast",
        help="PNG/WebP: fast to write, or smaller files that take longer (default: %(default)s)",
    )
    parser.add_argument("--smooth", type=float, default=0.0, help="clips: 0-1, steadier masks where nothing moves")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    parser.add_argument("--max-pixels", type=int, default=None, help="refuse larger images (default: RMBG_MAX_PIXELS)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or hints")
    _add_ray_remove(parser)
    parser.set_defaults(handler=run_remove)


def _add_ray_remove(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (pip install 'bgremover[ray]'; see docs/scale.md)")
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray: a local instance, or ADDRESS auto / ray://HOST:10001 / HOST:6379; "
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
    return build_request(
        output=args.output,
        bg_color=args.bg_color,
        bg_image=background,
        threshold=args.threshold,
        crop=args.crop,
        crop_margin=args.crop_margin,
        refine_edges=args.refine_edges,
        fmt=fmt,
        compression=args.compression,
    )


def _write(job: Job, data: bytes) -> str | None:
    """Writes one output; a failure (read-only or full disk, a file where a folder should be) is
    returned as the message for that file, so the rest of the run goes on."""
    from .imaging import encoding
    from .planning import STDIO

    if job.target == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return None
    try:
        encoding.write_atomic(Path(job.target), data)
    except OSError as error:
        return f"{job.label}: cannot write {job.target} ({error.strerror or error}). Check the output folder."
    return None


def _item(job: Job) -> Item:
    from .planning import STDIO
    from .service.removal import Item

    source = sys.stdin.buffer.read() if job.source == STDIO else job.source
    return Item(job.label, source)


def _ray_address(args) -> str | None:
    """`--ray` takes an optional ADDRESS, so `--ray photos/` would take the folder for one: a value
    that does not look like an address (auto, local, ray://..., HOST:PORT) is an input."""
    value = args.ray
    if value is None or value in ("auto", "local") or value.startswith("ray://") or re.fullmatch(r"[\w.-]+:\d+", value):
        return value
    args.inputs.insert(0, value)
    return "local"


def _ray_run(args: argparse.Namespace) -> RayRun | None:
    """What --ray asks for besides the service (None without --ray), for images and clips alike."""
    if args.ray is None:
        return None
    _require("ray", "ray", "requirements-ray.txt")
    from .scale.batch import RayRun

    return RayRun(
        args.inputs,
        args.out,
        args.format,
        args.ray,
        overwrite=args.overwrite,
        manifest=args.manifest,
        quiet=args.quiet,
        batch_size=args.batch_size,
        actors=args.ray_actors,
    )


def _run_clips(args: argparse.Namespace, config: ServiceConfig, ray_run: RayRun | None) -> int:
    """A clip run: its own `ClipRun` beside the one `ServiceConfig`, as images have `RayRun`."""
    _require("video", "av", "requirements-video.txt")
    from .video import ClipRun
    from .video.command import run_video

    run = ClipRun(
        tuple(args.inputs),
        args.out,
        args.format,
        args.output,
        overwrite=args.overwrite,
        quiet=args.quiet,
        batch_size=args.batch_size,
        smoothing=args.smooth,
        ray=ray_run,
    )
    return run_video(run, config, _request(args, "png"))


def run_remove(args) -> int:
    args.ray = _ray_address(args)
    if not args.inputs:
        raise UsageError("give at least one input: image files, folders, globs, or - for stdin")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    config = service_config(args)
    ray_run = _ray_run(args)
    if wants_video(args.inputs, args.out, args.format):
        return _run_clips(args, config, ray_run)
    request = _request(args, args.format)
    if ray_run is not None:
        from .scale.batch import run_on_ray

        return run_on_ray(ray_run, config, request)
    from .planning import STDIO, plan_jobs

    jobs = plan_jobs(args.inputs, args.out, args.format)
    if any(job.target == STDIO for job in jobs) and sys.stdout.isatty():
        raise UsageError(
            "the image would go to standard output, which is this terminal: "
            "redirect it (> cutout.png, or | into another program) or give -o FILE"
        )
    for job in jobs:
        if job.source != STDIO and Path(job.target).resolve() == Path(job.source).resolve():
            raise UsageError(f"{job.source}: the output would overwrite the input; choose another -o or --format")
    todo = [j for j in jobs if args.overwrite or j.target == STDIO or not Path(j.target).exists()]
    skipped = len(jobs) - len(todo)
    from .engines import int8_hint  # PyTorch: only once the command line has passed every check
    from .service.config import build_service

    service = build_service(config)
    engine = service.pool.get().engine  # load (or fail) before any input is read
    failures: list[str] = []
    done = 0
    from tqdm import tqdm

    progress = tqdm(total=len(todo), unit="img", disable=args.quiet or len(todo) < 2, file=sys.stderr)
    removals = service.remove_many(map(_item, todo), request, args.batch_size)
    for job, removal in zip(todo, removals, strict=True):
        error = removal.error or _write(job, removal.data)
        if error:
            failures.append(error)
            progress.write(f"failed: {error}", file=sys.stderr)
        else:
            done += 1
        progress.update(1)
    progress.close()
    if args.inputs != [STDIO]:
        summary = f"{done} done, {skipped} skipped (already there; --overwrite redoes them), {len(failures)} failed"
        summary += f"; {engine.info.name} on {engine.describe()}"
        print(summary, file=sys.stderr)
        hint = int8_hint(args.precision, engine.precision, engine.device, engine.info.family)
        if hint and not args.quiet:
            print(f"hint: {hint}", file=sys.stderr)
    if len(failures) > 1:  # repeated at the end, where they cannot scroll out of sight
        for failure in failures:
            print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _add_models(commands) -> None:
    parser = commands.add_parser("models", help="list the model zoo: license, gated, cached")
    parser.set_defaults(handler=run_models)
    parser = commands.add_parser("download", help="fetch weights into the Hugging Face cache ahead of time")
    parser.add_argument("names", nargs="+", help="zoo names or Hub repo ids")
    parser.add_argument(
        "--to",
        type=Path,
        metavar="DIR",
        help="also copy each model to DIR/NAME/model.safetensors, a folder to carry to a machine without "
        "internet and load there with --model DIR/NAME",
    )
    parser.set_defaults(handler=run_download)


def run_models(args) -> int:
    from . import hub, zoo

    rows = [("model", "repo", "size", "license", "gated", "cached")]
    for info in zoo.ZOO.values():
        rows.append(
            (
                info.name,
                info.repo_id,
                str(info.input_size),
                info.license_name,
                "yes" if info.gated else "no",
                "yes" if hub.is_cached(info) else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"\ncache: {hub.hub_cache_dir()}")
    print("Gated models need their license accepted on the Hub and HF_TOKEN set. RMBG weights: non-commercial.")
    return 0


def run_download(args) -> int:
    from . import hub

    failed = 0
    for name in args.names:
        try:
            info = hub.resolve(name)
            path = hub.copy_to_folder(info, args.to) if args.to else hub.checkpoint_file(info)
            print(f"{name}: {path}")
        except hub.ModelLoadError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _add_serve(commands) -> None:
    parser = commands.add_parser("serve", help="the web app and HTTP API (the default command)")
    parser.add_argument("--host", default=settings.server_host())
    parser.add_argument("--port", type=int, default=settings.server_port())
    add_model_arguments(parser)
    group = parser.add_argument_group("Ray Serve: the HTTP API, no UI (pip install 'bgremover[ray]'; docs/scale.md)")
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="serve the API on Ray: local, auto or ray://HOST:10001",
    )
    group.add_argument("--ray-replicas", type=int, default=1, help="replicas, one model each (default 1)")
    group.add_argument("--ray-max-replicas", type=int, help="autoscale from --ray-replicas up to this many")
    group.add_argument("--ray-cpus", type=int, help="CPUs (and threads) per CPU replica (default: all / replicas)")
    parser.set_defaults(handler=run_serve)


def _require(extra: str, module: str, requirements: str = "requirements.txt") -> None:
    """Stops with the install command when an optional extra's library is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(
            f"this command needs {module}, which is not installed: pip install 'bgremover[{extra}]' "
            f"(or pip install -r {requirements})"
        )


def run_serve(args) -> int:
    config = service_config(args)
    if args.ray is not None:
        _require("ray", "ray", "requirements-ray.txt")
        from .scale.serve import ServeConfig, serve_on_ray

        replicas = ServeConfig(config, settings.api_token(), args.ray_replicas, args.ray_max_replicas, args.ray_cpus)
        return serve_on_ray(replicas, args.ray, args.host, args.port)
    _require("web", "gradio")
    import logging

    from .service.config import build_service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = build_service(config, serving=True)  # bad settings (device, size, limits) fail before the port opens
    # The default model loads (OpenVINO: reads and compiles its cached export, in C++) while this thread
    # imports Gradio, 3 CPU-seconds of Python: a warm server is ready in the longer of the two, not their sum.
    service.pool.load_in_background()
    from .web.app import serve

    return serve(service, config, args.host, args.port)


def run_eval(args) -> int:
    _require("eval", "py_sod_metrics")
    from .eval.command import run_eval as evaluate

    return evaluate(args)


def _add_eval(commands) -> None:
    parser = commands.add_parser("eval", help="score models against ground-truth masks (DIS5K layout or CSV)")
    add_eval_arguments(parser)
    parser.set_defaults(handler=run_eval)


def run_bench(args) -> int:
    if args.e2e:
        from .bench_e2e import run_e2e_command

        return run_e2e_command(args, service_config(args))
    from .bench import run_command

    return run_command(args)


def _add_bench(commands) -> None:
    parser = commands.add_parser("bench", help="time a model here and check its fast path against float32 eager")
    add_model_arguments(parser)
    add_bench_arguments(parser)
    parser.set_defaults(handler=run_bench)


COMMANDS = [_add_serve, _add_remove, _add_models, _add_eval, _add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmbg", description="Self-hosted AI background remover.")
    commands = parser.add_subparsers(dest="command")
    for add in COMMANDS:
        add(commands)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as handlers see it. --device and --engine left out take RMBG_DEVICE and
    RMBG_ENGINE only now, not as the parser is built: a bad variable never stops `--help` or a
    command that sets the option, and fails (ValueError, naming it) inside main's error handling."""
    args = build_parser().parse_args(argv)
    if getattr(args, "device", "") is None:
        args.device = settings.device()
    if getattr(args, "engine", "") is None:
        args.engine = settings.engine()
    return args


def _model_load_errors() -> tuple[type[Exception], ...]:
    """The hub's ModelLoadError where the hub was imported: an error it never had the chance to raise
    needs no catching, and importing it here would load PyTorch for every command."""
    hub = sys.modules.get("bgremover.hub")
    return (hub.ModelLoadError,) if hub else ()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["serve", *argv]
    try:
        args = parse(argv)
        status = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader that left shows up here, not at exit
        return status
    except (UsageError, ValueError, *_model_load_errors()) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ChildFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rmbg models | head`: the reader left, which is not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
