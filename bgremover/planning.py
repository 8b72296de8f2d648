"""Which files a removal run reads and where each output goes: the one naming rule of `rmbg remove`.

Images, clips and the Ray run (whose inputs and -o may be URIs, `scale.locations`) all plan
through `plan_found`, so they name and mirror outputs alike: with -o FOLDER each input folder's
tree is mirrored there; without it a folder's outputs go to a sibling FOLDER_nobg and a file's
beside it as NAME_nobg.EXT; `photo.jpg` and `photo.png` in one folder do not collide; and
`check_not_overwriting` refuses any output that would replace its input.

Light to import (no Pillow or NumPy): the command line's `--help` and `video.ClipRun` load it.
"""

from __future__ import annotations

import glob
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from .errors import UsageError

STDIO = "-"
# What an output's name adds to its input's: photo.jpg -> photo_nobg.png, album/ -> album_nobg/.
NOBG = "_nobg"


def output_name(input_name: str, suffix: str) -> str:
    """The name an output takes beside its input (a file here, a download in the web app)."""
    return f"{PurePosixPath(input_name).stem}{NOBG}{suffix}"


@dataclass(frozen=True)
class FileRun:
    """What a run over files asks for besides the service: the inputs and -o as given, --format,
    and how it goes. Images run on it as it is; `video.ClipRun` and `scale.cluster.RayRun` add theirs."""

    inputs: tuple[str, ...]
    out: str | None
    fmt: str
    overwrite: bool = False
    quiet: bool = False
    batch_size: int = 1


@dataclass(frozen=True)
class Location:
    """A file: `path` on the local disk (`base` empty) or in the filesystem of the URI `base`."""

    path: str
    base: str = ""

    def __str__(self) -> str:
        """How manifests and messages name it: the local path, or a URI that opens it again."""
        if not self.base:
            return self.path
        return f"{self.base.split('://', 1)[0]}://{quote(self.path)}"

    def join(self, *parts: str) -> Location:
        return Location(posixpath.join(self.path, *parts) if parts else self.path, self.base)

    @property
    def parent(self) -> Location:
        return Location(posixpath.dirname(self.path.rstrip("/")), self.base)

    @property
    def name(self) -> str:
        """As pathlib names it: '' for '.' (the sibling of the current folder is `_nobg`)."""
        return PurePosixPath(self.path).name


@dataclass
class PlannedFile:
    """One input of a run and where its output goes; `label` names it in messages (its path below
    the folder given, for a folder's files)."""

    source: Location
    target: Location
    label: str


@dataclass
class Found:
    """An input file, the folder its relative path is mirrored from, and whether a folder gave it."""

    file: Location
    root: Location
    relative: str
    from_folder: bool

    @property
    def label(self) -> str:
        return posixpath.join(self.root.name, self.relative) if self.from_folder else str(self.file)


def expand_inputs(inputs: Iterable[str], suffixes: set[str] | None = None) -> Iterator[Found]:
    """The local files of `inputs`: files, folders (their files with `suffixes`: images when None,
    or clips for a video run) and globs."""
    if suffixes is None:
        from .imaging.decoding import IMAGE_SUFFIXES as suffixes
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in suffixes:
                    yield _found(file, path, True)
        elif path.is_file():
            yield _found(path, path.parent, False)
        else:
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise UsageError(f"{item}: no such file, folder or matching files")
            yield from (_found(match, match.parent, False) for match in matches)


def _found(file: Path, root: Path, from_folder: bool) -> Found:
    return Found(Location(str(file)), Location(str(root)), file.relative_to(root).as_posix(), from_folder)


def _target(found: Found, out: Location | None, suffix: str) -> tuple[Location, str]:
    """(folder, name) of one output: the naming rule."""
    below = posixpath.dirname(found.relative)
    stem = PurePosixPath(found.file.name).stem
    if out is not None:
        return out.join(below) if below else out, stem + suffix
    if found.from_folder:
        sibling = found.root.parent.join(found.root.name + NOBG)
        return sibling.join(below) if below else sibling, stem + suffix
    return found.file.parent, output_name(found.file.name, suffix)


def plan_found(
    files: list[Found], out: Location | None, fmt: str, is_folder: Callable[[Location], bool]
) -> list[PlannedFile]:
    """Where each output goes; one input file and an -o with a suffix that is no folder is that file."""
    from .imaging.encoding import file_suffix

    suffix = file_suffix(fmt)
    single = out and len(files) == 1 and not files[0].from_folder and posixpath.splitext(out.path)[1]
    if single and not is_folder(out):
        return [PlannedFile(files[0].file, out, files[0].label)]
    planned, claimed = [], set()
    for found in files:
        folder, name = _target(found, out, suffix)
        target = folder.join(name)
        if target in claimed:  # photo.jpg and photo.png in one folder
            target = folder.join(found.file.name.replace(".", "_") + suffix)
        claimed.add(target)
        planned.append(PlannedFile(found.file, target, found.label))
    return planned


def plan_files(inputs: Iterable[str], out: str | None, fmt: str, suffixes: set[str] | None = None) -> list[PlannedFile]:
    """Local inputs (or - for stdin) and where each output goes; -o - is stdout, for one image."""
    inputs = list(inputs)
    if inputs == [STDIO]:
        return [PlannedFile(Location(STDIO), Location(out or STDIO), "stdin")]
    files = list(expand_inputs(inputs, suffixes))
    if out == STDIO:
        if len(files) != 1:
            raise UsageError(f"-o - writes one image to stdout, but the inputs hold {len(files)} images")
        return [PlannedFile(files[0].file, Location(STDIO), files[0].label)]
    folder = Location(str(Path(out))) if out else None
    return plan_found(files, folder, fmt, lambda location: Path(location.path).is_dir())


def check_not_overwriting(
    planned: Iterable[PlannedFile], same_file: Callable[[Location, Location], bool] | None = None
) -> None:
    """Refuses a plan in which an output would replace its input (`same_file`: local paths by default)."""
    same_file = same_file or _same_local_file
    for each in planned:
        if each.source.path != STDIO and same_file(each.source, each.target):
            raise UsageError(f"{each.label}: the output would overwrite the input; choose another -o or --format")


def _same_local_file(source: Location, target: Location) -> bool:
    return Path(source.path).resolve() == Path(target.path).resolve()
