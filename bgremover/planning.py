"""Which files a removal run reads and where each output goes: the naming rules of `rmbg remove`.

Shared by the local run (cli) and the Ray run (scale), so both name and mirror outputs alike.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .imaging import decoding, encoding

STDIO = "-"


@dataclass
class Job:
    """One input and where its output goes; `label` names it in messages (its path below the input folder)."""

    source: Path | str
    target: Path | str
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or str(self.source)


def expand_inputs(inputs: list[str], suffixes: set[str] = decoding.IMAGE_SUFFIXES) -> Iterator[tuple[Path, Path, bool]]:
    """(file, root, from_folder): the file's path relative to root is mirrored in the output;
    folders give their files with `suffixes` (images, or clips for a video run)."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in suffixes:
                    yield file, path, True
        elif path.is_file():
            yield path, path.parent, False
        else:
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise UsageError(f"{item}: no such file, folder or matching files")
            yield from ((match, match.parent, False) for match in matches)


def plan_jobs(inputs: list[str], out: str | None, fmt: str, suffixes: set[str] = decoding.IMAGE_SUFFIXES) -> list[Job]:
    """Where each output goes.

    With -o FOLDER, each input folder's tree is mirrored there. Without it, a folder's
    outputs go to a sibling FOLDER_nobg, and a file's beside it as NAME_nobg.EXT.
    """
    if inputs == [STDIO]:
        return [Job(STDIO, out or STDIO, "stdin")]
    suffix = encoding.file_suffix(fmt)
    files = list(expand_inputs(inputs, suffixes))
    if out == STDIO:
        if len(files) != 1:
            raise UsageError(f"-o - writes one image to stdout, but the inputs hold {len(files)} images")
        return [Job(files[0][0], STDIO)]
    if out and len(files) == 1 and not files[0][2] and Path(out).suffix and not Path(out).is_dir():
        return [Job(files[0][0], Path(out))]
    jobs, claimed = [], set()
    for file, root, from_folder in files:
        stem = file.stem
        if out:
            folder = Path(out) / file.parent.relative_to(root)
        elif from_folder:
            folder = root.parent / f"{root.name}_nobg" / file.parent.relative_to(root)
        else:
            folder, stem = file.parent, f"{file.stem}_nobg"
        target = folder / (stem + suffix)
        if target in claimed:  # photo.jpg and photo.png in one folder
            target = folder / (file.name.replace(".", "_") + suffix)
        claimed.add(target)
        jobs.append(Job(file, target, file.relative_to(root.parent).as_posix() if from_folder else str(file)))
    return jobs
