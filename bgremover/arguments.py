"""The options of `rmbg bench` and `rmbg eval`, kept apart from the code that runs them, and read
into the typed runs those commands take (the namespace goes no further than the command line);
the options every model command shares (`add_model_arguments`) and the one place they become a
`ServiceConfig`; and the commands' checks that run before any model loads (`check_model_name`,
`require`: an optional extra is installed).

Those modules load PyTorch as they are imported; their options need only names, so the parser
(and every `--help`) is built without them: the runs' types are imported once a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from . import settings
from .choices import COMPRESSIONS, ENGINE_HELP, ENGINES, OUTPUT_FORMATS, PHOTO_ONLY_OUTPUTS, PRECISION_HELP
from .errors import UsageError
from .settings import DEFAULT_MODEL

if TYPE_CHECKING:
    from .bench import BenchRun
    from .eval.command import EvalRun
    from .service.config import ServiceConfig

# --device and --engine default to their variables, read once the command line is parsed (cli.parse).
DEVICE_HELP = "auto, cpu, cuda, cuda:N (default: RMBG_DEVICE, else auto)"
ENGINE_OPTION_HELP = f"{ENGINE_HELP} (default: RMBG_ENGINE, else auto)"


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


def add_ray_address(group: argparse._ArgumentGroup, help: str) -> None:
    """--ray [ADDRESS]: alone, a Ray instance started here."""
    group.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help=help)


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


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `rmbg bench` beyond the shared --model, --device, --precision and --size."""
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the first (default: %(default)s)")
    parser.add_argument("--synthetic", action="store_true", help="the model's architecture with synthetic weights")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (as RMBG_COMPILE=1)")
    parser.add_argument("--plain", action="store_true", help="PyTorch's network as built (the reference), no fast path")
    parser.add_argument("--no-graphs", action="store_true", help="no CUDA-graph replay (as RMBG_CUDA_GRAPHS=0)")
    parser.add_argument("--no-check", action="store_true", help="skip the accuracy check against float32 eager")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--engines", action="store_true", help="compare every engine and precision this CPU runs, in one table"
    )
    parser.add_argument(
        "--cold-start",
        type=int,
        default=0,
        metavar="N",
        help="also time N fresh processes to a first result, split into imports, load, compile and first inference",
    )
    e2e = parser.add_argument_group("end to end (--e2e)")
    e2e.add_argument(
        "--e2e",
        action="append",
        metavar="IMAGE",
        help="time decode, queue, infer, finish and encode on this image instead (repeatable)",
    )
    e2e.add_argument("--output", choices=PHOTO_ONLY_OUTPUTS, default="cutout")
    e2e.add_argument("--format", choices=OUTPUT_FORMATS, default="png")
    e2e.add_argument("--compression", choices=COMPRESSIONS, default="fast")
    e2e.add_argument("--refine-edges", action="store_true")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `rmbg eval`."""
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="DIR|CSV",
        help="dataset folder with im/ and gt/ (DIS5K layout), or a CSV with columns image,mask; repeatable",
    )
    parser.add_argument(
        "--model",
        action="append",
        help=f"zoo name, Hub repo id, folder or .safetensors file; repeatable (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--out", type=Path, default=Path("eval_out"), help="prediction cache (default: %(default)s)")
    parser.add_argument("--device", help=DEVICE_HELP)
    parser.add_argument("--precision", default="auto", help=PRECISION_HELP)
    parser.add_argument("--engine", choices=ENGINES, help=ENGINE_OPTION_HELP)
    parser.add_argument("--size", type=int, default=None, help="inference size, a multiple of 32 (default: model's)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true", help="recompute predictions that are already cached")
    parser.add_argument("--csv", type=Path, help="also write the results to this CSV file")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def bench_run(args: argparse.Namespace) -> BenchRun:
    """What `rmbg bench` was asked for, in the type `bench` and `bench_e2e` take."""
    from .bench import BenchRun

    return BenchRun(
        args.model,
        args.device,
        args.precision,
        args.engine,
        args.size,
        args.batch_size,
        args.runs,
        args.synthetic,
        args.threads,
        check=not args.no_check,
        compiled=True if args.compile else None,
        fast_path=not args.plain,
        graphs=False if args.no_graphs else None,
        engines=args.engines,
        cold_start=args.cold_start,
        json=args.json,
        e2e=tuple(args.e2e or ()),
    )


def eval_run(args: argparse.Namespace) -> EvalRun:
    """What `rmbg eval` was asked for besides the service (`service_config` reads that)."""
    from .eval.command import EvalRun

    models = tuple(args.model or ())
    return EvalRun(tuple(args.data), models, args.out, args.batch_size, args.overwrite, args.quiet, args.csv, args.json)


def require(extra: str, module: str, requirements: str = "requirements.txt") -> None:
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
