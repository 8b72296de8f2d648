"""Where a Ray batch reads and writes: local paths, or URIs that pyarrow's filesystems open.

When every input and the output are local, `plan` is `rmbg remove`'s own `plan_files`. When an
input or the output is a URI (`s3://`, `gs://`, `file://`, ...), the files are listed through
`pyarrow.fs` and named by the same rule (`planning.plan_found`), so a Ray run names its outputs
exactly as a local one.

A file is a `planning.Location`: a path, plus the URI whose filesystem holds it (empty for the local
disk). Workers open that URI once per process and then address files by path, so listing
results (which are paths, not URIs) never need to be turned back into parseable URIs.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow
from pyarrow import fs as pafs

from ..errors import UsageError
from ..imaging import decoding, encoding
from ..planning import STDIO, Found, Location, PlannedFile, check_not_overwriting, expand_inputs, plan_files, plan_found

_WILDCARD = re.compile(r"[*?]")
_GLOB_PARTS = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def is_uri(text: str) -> bool:
    return "://" in text


@functools.lru_cache(maxsize=64)
def filesystem(base: str) -> pafs.FileSystem:
    """The filesystem of `base` ('' is the local disk), opened once per process: object-store
    clients are slow to create and hold connection pools."""
    if not base:
        return pafs.LocalFileSystem()
    return _open(base)[0]


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        raise UsageError(f"{uri}: cannot open it as a file or folder ({error})") from None


def locate(text: str) -> Location:
    """A command-line input or output as a Location (local paths stay as given)."""
    if not is_uri(text):
        return Location(text)
    _, path = _open(text)
    return Location(path.rstrip("/") or "/", text)


def _is_local_file_uri(location: Location) -> bool:
    return bool(location.base) and isinstance(filesystem(location.base), pafs.LocalFileSystem)


# --- Reading and writing files, wherever they are ----------------------------------------------


def read_bytes(location: Location) -> bytes:
    """The whole file; OSError (missing, no permission, network) is the caller's to report."""
    if not location.base:
        return Path(location.path).read_bytes()
    with filesystem(location.base).open_input_stream(location.path) as stream:
        return stream.read()


def write_bytes(location: Location, data: bytes) -> None:
    """Writes so that a killed or retried task never leaves a half file that a resumed run would
    skip: local files (plain paths and file:// URIs) through `write_atomic`; object stores
    publish an object only once its upload completes, so a stream closed early leaves nothing."""
    if not location.base or _is_local_file_uri(location):
        encoding.write_atomic(Path(location.path), data)
        return
    store = filesystem(location.base)
    store.create_dir(location.parent.path, recursive=True)
    with store.open_output_stream(location.path) as stream:
        stream.write(data)


def existing(locations: Iterable[Location]) -> set[Location]:
    """Those of `locations` that are files already; one listing per folder, not one request per file."""
    by_folder: dict[Location, list[Location]] = defaultdict(list)
    for location in locations:
        by_folder[location.parent].append(location)
    found: set[Location] = set()
    for folder, members in by_folder.items():
        if not folder.base:
            found.update(m for m in members if Path(m.path).is_file())
            continue
        selector = pafs.FileSelector(folder.path, allow_not_found=True)
        files = {info.path.rstrip("/") for info in filesystem(folder.base).get_file_info(selector) if info.is_file}
        found.update(m for m in members if m.path in files)
    return found


# --- Planning: which files, and where their outputs go -----------------------------------------


def _glob_pattern(pattern: str) -> re.Pattern[str]:
    """`**` crosses folders, `*` and `?` stay within one name, as in `glob.glob(recursive=True)`."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern)
    return re.compile("".join(_GLOB_PARTS.get(part, re.escape(part)) for part in parts) + r"\Z")


def _listing(base: str, folder: str) -> list[str]:
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    return sorted(info.path for info in filesystem(base).get_file_info(selector) if info.is_file)


def _is_image(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in decoding.IMAGE_SUFFIXES


def _expand_uri(text: str) -> Iterator[Found]:
    location = locate(text)
    info = filesystem(text).get_file_info(location.path)
    if info.type == pafs.FileType.Directory:
        for path in filter(_is_image, _listing(text, location.path)):
            yield Found(Location(path, text), location, posixpath.relpath(path, location.path), True)
    elif info.type == pafs.FileType.File:
        yield Found(location, location.parent, location.name, False)
    else:
        yield from _expand_uri_glob(text, location)


def _expand_uri_glob(text: str, location: Location) -> Iterator[Found]:
    parts = location.path.split("/")
    fixed = next((i for i, part in enumerate(parts) if _WILDCARD.search(part)), None)
    if fixed is None:
        raise UsageError(f"{text}: no such file, folder or matching files")
    pattern = _glob_pattern(location.path)
    matches = [p for p in _listing(text, "/".join(parts[:fixed]) or "/") if pattern.match(p)]
    if not matches:
        raise UsageError(f"{text}: no such file, folder or matching files")
    for path in matches:
        file = Location(path, text)
        yield Found(file, file.parent, file.name, False)


def _expand(inputs: list[str]) -> Iterator[Found]:
    for text in inputs:
        yield from _expand_uri(text) if is_uri(text) else expand_inputs([text])


def _is_folder(location: Location) -> bool:
    if not location.base:
        return Path(location.path).is_dir()
    return filesystem(location.base).get_file_info(location.path).type == pafs.FileType.Directory


def plan(inputs: list[str], out: str | None, fmt: str) -> list[PlannedFile]:
    """Every input file and its output; refuses stdin and any output that would replace its input."""
    if STDIO in inputs or out == STDIO:
        raise UsageError("--ray reads files and writes files: stdin and stdout (-) are not supported")
    if any(map(is_uri, inputs)) or (out and is_uri(out)):
        planned = plan_found(list(_expand(inputs)), locate(out) if out else None, fmt, _is_folder)
    else:
        planned = plan_files(inputs, out, fmt)
    check_not_overwriting(planned, _same_file)
    return planned


def _same_file(source: Location, target: Location) -> bool:
    if _resolved(source) is not None and _resolved(source) == _resolved(target):
        return True
    return source.base.split("://", 1)[0] == target.base.split("://", 1)[0] and source.path == target.path


def _resolved(location: Location) -> Path | None:
    """The local file behind a plain path or a file:// URI; None for object stores."""
    if not location.base or _is_local_file_uri(location):
        return Path(location.path).resolve()
    return None
