"""Checkpoint files: reading their header and weights into a network, checking they fit it, writing them.

Only `.safetensors` files are read: they hold tensors and nothing else, so loading a model never
unpickles data and never runs code from a model repository. `hub.py` finds the file; this module
only reads and writes it, and needs no PyTorch until weights are copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from safetensors import SafetensorError, safe_open

from .choices import DERIVED_BUFFERS
from .errors import ModelLoadError
from .families import describe

if TYPE_CHECKING:
    import torch
    from torch import nn

# Wrappers that training scripts put around module names (DataParallel, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Buffers computed by the module itself; a checkpoint may or may not carry them.
_Stored = TypeVar("_Stored")
_MAX_LISTED_KEYS = 8
# Stored tensors are read this much at a time, the file reopened for each batch: safetensors maps the
# whole file, and the pages read stay in the process's memory until it is closed.
_READ_BATCH_BYTES = 64 * 2**20


@dataclass(frozen=True)
class StoredShape:
    """One tensor of a checkpoint as its header describes it: the shape is all that identifies a network."""

    shape: tuple[int, ...]


def read_weights_into(network: nn.Module, path: Path, name: str) -> None:
    """Copies a checkpoint that fits `network` (see `check_fits`) into it, cast to its dtypes, a
    batch of tensors at a time: the checkpoint is never in memory whole beside the network."""
    targets = network.state_dict()
    stored_as = {key: as_ for key, as_ in _stored_names(path, name).items() if not key.endswith(DERIVED_BUFFERS)}
    batches, batch, size = [], [], 0
    for key in stored_as:
        batch.append(key)
        size += targets[key].numel() * targets[key].element_size()
        if size >= _READ_BATCH_BYTES:
            batches.append(batch)
            batch, size = [], 0
    import torch

    try:
        with torch.no_grad():
            for keys in [*batches, batch]:
                with safe_open(str(path), framework="pt") as file:
                    for key in keys:
                        targets[key].copy_(file.get_tensor(stored_as[key]))
    except (SafetensorError, OSError) as error:
        raise _corrupt(path, name, error) from error


def _stored_names(path: Path, name: str) -> dict[str, str]:
    """Each tensor's name in the network, with the name it is stored under."""
    _refuse_pickles(path, name)
    try:
        with safe_open(str(path), framework="numpy") as header:
            return _without_wrapper_prefix({key: key for key in header.keys()})  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise _corrupt(path, name, error) from error


def read_shapes(path: Path, name: str) -> dict[str, StoredShape]:
    """The checkpoint's names and shapes from its header alone: enough to tell its architecture,
    without reading the weights (or importing PyTorch)."""
    _refuse_pickles(path, name)
    try:
        with safe_open(str(path), framework="numpy") as header:
            state = {key: StoredShape(tuple(header.get_slice(key).get_shape())) for key in header.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise _corrupt(path, name, error) from error
    return _without_wrapper_prefix(state)


def _refuse_pickles(path: Path, name: str) -> None:
    if path.suffix != ".safetensors":
        raise ModelLoadError(
            f"{name}: {path.name} is not a .safetensors file. Pickle-based checkpoints (.pth, .bin, .ckpt) "
            "can run arbitrary code when loaded and are not supported; convert it to safetensors first."
        )


def _corrupt(path: Path, name: str, error: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"{name}: the checkpoint {path} is corrupt or incomplete ({error}). Delete it and download it "
        f"again (`python rmbg.py download {name}`)."
    )


def _without_wrapper_prefix(state: dict[str, _Stored]) -> dict[str, _Stored]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def save_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """Writes a state dict as safetensors, the only format the loader reads."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(path))
    return path


def store_in_cache(cache_dir: Path, repo_id: str, state: dict[str, torch.Tensor], revision: str) -> Path:
    """Places a checkpoint in huggingface_hub's own cache layout, as if downloaded at `revision`.

    Lets offline hosts, benchmarks and tests exercise the real by-name loading path
    with weights that never came from the Hub.
    """
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return save_checkpoint(repo / "snapshots" / revision / "model.safetensors", state)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    return shown + (f" and {len(keys) - _MAX_LISTED_KEYS} more" if len(keys) > _MAX_LISTED_KEYS else "")


def check_fits(network: nn.Module, state: dict[str, StoredShape], name: str) -> None:
    """Refuses a checkpoint (its tensors, or their shapes) whose names or shapes are not exactly
    the network's; buffers the module derives itself are always its own, stored or not."""
    expected = network.state_dict()
    derived = {k: v for k, v in expected.items() if k.endswith(DERIVED_BUFFERS)}
    state = {**state, **derived}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_listed(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} tensor(s) with the wrong shape: {_listed(wrong_shape)}")
    if problems:
        raise ModelLoadError(
            f"{name}: the checkpoint does not fit the {describe(expected)} network: "
            + "; ".join(problems)
            + ". It may be damaged or from a different architecture variant."
        )
