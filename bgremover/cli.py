"""Command line: `rmbg [serve]`, `demo`, `remove`, `models`, `download`, `import`, `bench`, `eval`.

Commands are thin: they parse arguments and hand over to the pipeline, the hub loader or the web
app. `remove` lives in remove_command.py (its image run in runs.py), `models`, `download` and
`import` in model_commands.py, the options they share in arguments.py. Errors the user can fix are
printed as one line, not a trace.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from . import settings
from .arguments import (
    DEVICE_HELP,
    add_bench_arguments,
    add_eval_arguments,
    add_model_arguments,
    add_ray_address,
    bench_run,
    check_model_name,
    eval_run,
    require,
    service_config,
)
from .errors import ChildFailed, ModelLoadError, UsageError
from .model_commands import add_import_command, add_model_commands
from .remove_command import add_remove_command

# Only light modules above: the parser and every `--help` are built without PyTorch, Gradio or Ray,
# which each handler imports when its work starts.
if TYPE_CHECKING:
    from .service.config import ServiceConfig


def _add_serve(commands) -> None:
    parser = commands.add_parser("serve", help="the web app and HTTP API (the default command)")
    parser.add_argument("--host", default=settings.server_host())
    parser.add_argument("--port", type=int, default=settings.server_port())
    add_model_arguments(parser, falls_back=True)
    group = parser.add_argument_group("Ray Serve: the HTTP API, no UI (pip install 'bgremover[ray]'; docs/scale.md)")
    add_ray_address(group, "serve the API on Ray: local, auto or ray://HOST:10001")
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
    require("web", "gradio")
    from .service.config import ServiceConfig
    from .synthetic import DEMO_NOTE, demo_checkpoint

    config = ServiceConfig.from_settings(model=str(demo_checkpoint()), device=args.device, model_note=DEMO_NOTE)
    return _serve_here(config, args.host, args.port)


def run_serve(args) -> int:
    check_model_name(args.model)
    config = service_config(args)
    if args.ray is not None:
        require("ray", "ray", "requirements-ray.txt")
        from .scale.serve import ServeConfig, serve_on_ray

        replicas = ServeConfig(config, settings.api_token(), args.ray_replicas, args.ray_max_replicas, args.ray_cpus)
        return serve_on_ray(replicas, args.ray, args.host, args.port)
    require("web", "gradio")
    return _serve_here(config, args.host, args.port)


def _serve_here(config: ServiceConfig, host: str, port: int) -> int:
    """The web app on this machine, until stopped."""
    import logging

    from .service.config import build_service

    logging.basicConfig(level=logging.INFO)  # the format: web.request_ids.configure_logging, once uvicorn is set up
    logging.getLogger("torch").setLevel(logging.WARNING)  # its INFO lines (cache statistics at exit): noise
    service = build_service(config, serving=True)  # bad settings (device, size, limits) fail before the port opens
    # The default model loads (OpenVINO: reads and compiles its cached export, in C++) while the port
    # opens; the web page (Gradio, 3 CPU-seconds of imports) is built after that (web/late_ui.py).
    service.pool.load_in_background()
    from .web.app import serve

    return serve(service, config, host, port)


def run_eval(args) -> int:
    require("eval", "py_sod_metrics")
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


COMMANDS = [_add_serve, _add_demo, add_remove_command, add_model_commands, add_import_command, _add_eval, _add_bench]


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["serve", *argv]
    try:
        args = parse(argv)
        status = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader that left shows up here, not at exit
        return status
    except (UsageError, ValueError, ModelLoadError) as error:
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
