"""Native checkpoints from ONNX exports (`rmbg import`): the trained weights read out of the graph.

`import_onnx` reads a graph (`graph.read_graph`), asks each converter in `CONVERTERS` whether the
graph is its network, and writes the state dict as `<to>/<name>/model.safetensors` under a temporary
name first, so a failure leaves nothing half-written. Needs the `onnx` package
(`pip install 'bgremover[import]'`), imported only when a file is read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .birefnet import birefnet_state
from .graph import Graph, ImportRefused, read_graph
from .isnet import isnet_state

__all__ = ["CONVERTERS", "ImportRefused", "convert", "import_onnx", "write_checkpoint"]

# Each returns the native state dict a graph holds, or None when the graph is not its network.
# A converter raises `ImportRefused` when the graph is its network but the weights cannot be recovered.
CONVERTERS: dict[str, Callable[[Graph], dict[str, np.ndarray] | None]] = {
    "IS-Net": isnet_state,
    "BiRefNet": birefnet_state,
}


def convert(path: Path) -> dict[str, np.ndarray]:
    """The native state dict held by the ONNX file at `path`; `ImportRefused` names what was found otherwise."""
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    graph = read_graph(path)
    for convert_graph in CONVERTERS.values():
        state = convert_graph(graph)
        if state is not None:
            return state
    raise ImportRefused(
        f"{path.name} is not a graph of a network this project imports ({', '.join(CONVERTERS)}): "
        f"it has {graph.census()} nodes."
    )


def write_checkpoint(state: dict[str, np.ndarray], target: Path) -> Path:
    """Writes `state` as safetensors at `target` atomically: a temporary file beside it, then a rename."""
    from safetensors.numpy import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    try:
        save_file({name: np.ascontiguousarray(value) for name, value in state.items()}, partial)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def import_onnx(source: Path, to: Path, name: str | None = None, overwrite: bool = False) -> Path:
    """Converts `source` into `to/<name>/model.safetensors` (name: the file's stem), loadable as `--model to/<name>`.

    An existing checkpoint there is kept unless `overwrite`; nothing is created before the
    conversion has succeeded.
    """
    folder = to / (name or source.stem)
    target = folder / "model.safetensors"
    if target.exists() and not overwrite:
        raise ImportRefused(f"{target} exists already: pass --overwrite to replace it, or --name for another folder")
    state = convert(source)
    try:
        return write_checkpoint(state, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if this import created it and left it empty
        raise ImportRefused(f"cannot write {target} ({error.strerror or error})") from error
