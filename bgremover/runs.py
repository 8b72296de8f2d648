"""`rmbg remove` on images on this machine: planned by `planning`, run through the service a batch at
a time, each output written as it comes, a failed file reported and the rest going on. Clips run in
`video.command`, both on Ray in `scale/`; each gets a `ServiceConfig` and its `FileRun` from
`remove_command.py`, never the argparse namespace.

Light to import: the service and PyTorch load once the plan has passed every check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError
from .planning import STDIO, FileRun, PlannedFile, check_not_overwriting, plan_files

if TYPE_CHECKING:
    from .service.config import ServiceConfig
    from .service.options import RemovalRequest
    from .service.removal import Item, RemovalService


def noted(config: ServiceConfig, quiet: bool) -> ServiceConfig:
    """`config`, once its note (why a model nobody chose is the one run) is on stderr."""
    if config.model_note and not quiet:
        print(f"note: {config.model_note}", file=sys.stderr)
    return config


def plan_images(run: FileRun) -> list[PlannedFile]:
    """The run's images and their outputs, refused before any model loads when an output would
    replace its input or an image would go to this terminal."""
    planned = plan_files(run.inputs, run.out, run.fmt)
    if any(each.target.path == STDIO for each in planned) and sys.stdout.isatty():
        raise UsageError(
            "the image would go to standard output, which is this terminal: "
            "redirect it (> cutout.png, or | into another program) or give -o FILE"
        )
    check_not_overwriting(planned)
    return planned


def run_images(run: FileRun, config: ServiceConfig, request: RemovalRequest) -> int:
    """Every planned image not done yet; exit status 1 when any failed (each named with why), 0 otherwise."""
    planned = plan_images(run)
    todo = [p for p in planned if run.overwrite or p.target.path == STDIO or not Path(p.target.path).exists()]
    from .engines import int8_hint  # PyTorch: only once the command line has passed every check
    from .service.config import build_service

    service = build_service(noted(config, run.quiet))
    engine = service.pool.get().engine  # load (or fail) before any input is read
    failures = _remove_all(service, todo, request, run)
    if list(run.inputs) != [STDIO]:
        summary = f"{len(todo) - len(failures)} done, {len(planned) - len(todo)} skipped (already there; "
        summary += f"--overwrite redoes them), {len(failures)} failed; {engine.info.name} on {engine.describe()}"
        print(summary, file=sys.stderr)
        hint = int8_hint(config.precision, engine.precision, engine.device, engine.info.family)
        if hint and not run.quiet:
            print(f"hint: {hint}", file=sys.stderr)
    if len(failures) > 1:  # repeated at the end, where they cannot scroll out of sight
        for failure in failures:
            print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _remove_all(service: RemovalService, todo: list[PlannedFile], request: RemovalRequest, run: FileRun) -> list[str]:
    """Removes and writes `todo` under one progress bar; the message of each file that failed."""
    from tqdm import tqdm

    from . import estimates

    failures: list[str] = []
    progress = tqdm(total=len(todo), unit="img", disable=run.quiet or len(todo) < 2, file=sys.stderr)
    past = estimates.past_run(service.remover(request))
    if past is not None:  # until the first image gives tqdm its own rate and time left
        progress.set_postfix_str(f"about {estimates.describe(past * len(todo))} (past runs)")
    removals = service.remove_many(map(_item, todo), request, run.batch_size)
    for each, removal in zip(todo, removals, strict=True):
        progress.set_postfix_str("", refresh=False)
        error = removal.error or _write(each, removal.data)
        if error:
            failures.append(error)
            progress.write(f"failed: {error}", file=sys.stderr)
        progress.update(1)
    progress.close()
    return failures


def _write(planned: PlannedFile, data: bytes) -> str | None:
    """Writes one output; a failure (read-only or full disk, a file where a folder should be) is
    returned as the message for that file, so the rest of the run goes on."""
    from .imaging import encoding

    if planned.target.path == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return None
    target = planned.target.path
    try:
        encoding.write_atomic(Path(target), data)
    except OSError as error:
        return f"{planned.label}: cannot write {target} ({error.strerror or error}). Check the output folder."
    return None


def _item(planned: PlannedFile) -> Item:
    from .service.removal import Item

    source = sys.stdin.buffer.read() if planned.source.path == STDIO else Path(planned.source.path)
    return Item(planned.label, source)
