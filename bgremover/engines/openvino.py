"""The OpenVINO engine: the project's own networks, exported once, run by OpenVINO's CPU plugin.

On CPUs without native bfloat16 (AVX2-only desktops, laptops, many cloud VMs) both
engines compute in float32, and which one is faster is measured, not assumed
(BENCHMARKS.md, "CPU engines"). The network is exported through `torch.export` from
the same modules and weights the PyTorch engine runs, converted to OpenVINO's format
and cached on disk next to the Hugging Face cache (docs/engines.md). Nothing is
downloaded from anywhere else.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import settings
from ..hub import identify_model, load_model
from ..version import __version__
from ..zoo import ModelInfo
from .devices import CPU, device_lock, native_bf16_cpu

if TYPE_CHECKING:  # PyTorch only converts: a cached export runs without it
    import torch
    from torch import nn

log = logging.getLogger(__name__)

OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")  # int8: IS-Net, opt-in (openvino_int8.py)
_INSTALL_HINT = "pip install 'bgremover[openvino]' (or: pip install -r requirements-openvino.txt)"


def openvino_available() -> bool:
    """Whether the `openvino` extra is installed."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _openvino():
    try:
        import openvino
    except ImportError as error:
        raise ValueError(f"the OpenVINO engine needs OpenVINO: {_INSTALL_HINT}.") from error
    return openvino


def openvino_precision(precision: str) -> str:
    """`auto` is bf16 on CPUs with native bf16, else fp32; int8 only when asked for."""
    if precision == "auto":
        return "bf16" if native_bf16_cpu() else "fp32"
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"the OpenVINO engine runs {', '.join(OPENVINO_PRECISIONS)} (or auto), not {precision!r}.")
    if precision == "int8":
        from .openvino_int8 import check_installed

        check_installed()
    if precision == "bf16" and not native_bf16_cpu():
        raise ValueError(
            "this CPU has no native bfloat16, so bf16 would be emulated and far slower than fp32: "
            "use --precision fp32 or auto."
        )
    return precision


@contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    """One process at a time converts and compiles into `folder`: Ray actors (and servers) on one
    node share the cache, and OpenVINO's own compiled-model cache fails when two processes write
    the same entry at once. The others wait, then find the export made and load its compiled blob."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def engine_cache_dir() -> Path:
    """Exported networks live beside the Hugging Face cache, so a Docker volume keeps both."""
    return settings.hub_cache_dir().parent / "rmbg-engines"


def checkpoint_key(checkpoint: Path) -> str:
    """Names one checkpoint file's exports: its resolved path (a Hub snapshot path holds the
    revision), size and modification time, and this project's version (the networks' code)."""
    resolved = checkpoint.resolve()
    stat = resolved.stat()
    identity = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}|{__version__}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class OpenVinoEngine:
    """A network exported to OpenVINO, compiled for the CPU once per input size.

    It is fed NumPy arrays (`numpy_io`), so that a size whose export is cached runs in a process
    that never imports PyTorch; a PyTorch tensor in gives one out, for the callers that have one.
    """

    runtime = "openvino"
    numpy_io = True

    def __init__(self, network: nn.Module | None, info: ModelInfo, label: str, checkpoint: Path, precision: str):
        """`network` is the float32 PyTorch network, exported per input size, then released; with
        None it is read from `checkpoint` when a size has no cached export yet."""
        self.info = info
        self.label = label
        self.device = CPU
        self.precision = openvino_precision(precision)
        self.lock = device_lock(self.device)
        self._network: nn.Module | None = network
        self._checkpoint = checkpoint
        self._compiled: dict[tuple[int, int], object] = {}
        self._guard = threading.Lock()

    @classmethod
    def load(cls, model: str | ModelInfo, precision: str = "auto") -> OpenVinoEngine:
        """Finds `model` through the hub loader and checks OpenVINO is installed. The PyTorch
        network is built only if an input size has no cached export: once exported, a model
        loads without reading its weights twice or holding two copies of them."""
        _openvino()
        openvino_precision(precision)
        found = identify_model(model)
        return cls(None, found.info, found.label, found.path, precision)

    @property
    def dtype(self) -> torch.dtype:
        """float32, what the export is fed whatever it computes in."""
        import torch

        return torch.float32

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Images one at a time: the export is for batch 1, and on a CPU a batch is no faster per image."""
        compiled = self._model_for(tuple(batch.shape[-2:]))
        tensor = not isinstance(batch, np.ndarray)
        images = batch.float().numpy() if tensor else batch.astype(np.float32, copy=False)
        outputs = np.concatenate([compiled(images[i : i + 1])[0] for i in range(len(images))])
        if tensor:
            import torch

            return torch.from_numpy(outputs)
        return outputs

    def prepare(self, hw: tuple[int, int]) -> None:
        """Converts (first use of this size on this machine) and compiles the model for `hw` (height, width)."""
        self._model_for(hw)

    def describe(self) -> str:
        return f"openvino {_version()} {self.precision} on cpu"

    def _model_for(self, size: tuple[int, int]):
        with self._guard:
            if size not in self._compiled:
                self._compiled[size] = self._compile(size)
            return self._compiled[size]

    def _compile(self, size: tuple[int, int]):
        openvino = _openvino()
        path = self.exported_path(size)
        with _cache_lock(path.parent):
            if not path.exists():
                self._export(size, path)
            if self.precision == "int8":
                path = self._quantized(openvino, path, size)
            return self._compile_export(openvino, path)

    def _compile_export(self, openvino, path: Path):
        self._network = None  # another size re-reads the checkpoint: the float32 copy is not kept beside OpenVINO's
        # int8 leaves some operations in float: bf16 where the CPU has it, as for the bf16 precision.
        bf16 = self.precision == "bf16" or (self.precision == "int8" and native_bf16_cpu())
        hint = "bf16" if bf16 else "f32"
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": str(path.parent / f"compiled-{'int8' if self.precision == 'int8' else hint}"),
        }
        return openvino.Core().compile_model(str(path), "CPU", config)

    def _quantized(self, openvino, path: Path, size: tuple[int, int]) -> Path:
        """The int8 model beside the float export `path`, quantised on first use (openvino_int8.py)."""
        from ..families import get_family
        from .openvino_int8 import quantize

        quantized = path.with_name(f"{path.stem}-int8.xml")
        if not quantized.exists():
            started = time.perf_counter()
            _progress(f"{self.info.name}: quantising to int8 with NNCF at {size[0]}x{size[1]}, once")
            processing = get_family(self.info.family).processing
            model = quantize(openvino.Core().read_model(str(path)), processing, size[0])  # sizes are square
            _save(openvino, model, quantized)
            _progress(f"{self.info.name}: int8 model ready in {time.perf_counter() - started:.0f} s")
        return quantized

    def exported_path(self, size: tuple[int, int]) -> Path:
        """Where this checkpoint's export for `size` and this precision is cached."""
        folder = engine_cache_dir() / f"openvino-{_version()}" / self.info.name.replace("/", "--")
        return folder / checkpoint_key(self._checkpoint) / f"{size[0]}x{size[1]}.xml"  # bf16 is a compile option

    def _export(self, size: tuple[int, int], path: Path) -> None:
        openvino = _openvino()
        started = time.perf_counter()
        where = f"{size[0]}x{size[1]}, once; cached in {path.parent}"
        _progress(f"{self.info.name}: converting for OpenVINO at {where}")
        model = openvino.convert_model(self._exported_program(size))
        model.reshape([1, 3, *size])
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(openvino, model, path)
        _progress(f"{self.info.name}: OpenVINO model ready in {time.perf_counter() - started:.0f} s")

    def _exported_program(self, size: tuple[int, int]) -> torch.export.ExportedProgram:
        """The network traced at batch 1 and `size`, with the grid-sample deformable kernel
        (OpenVINO's own deformable convolution is much slower on a CPU)."""
        import torch

        from ..nets import deform

        network = self._network if self._network is not None else load_model(str(self._checkpoint)).network
        example = torch.zeros(1, 3, *size)
        previous = deform.set_deform_kernel("grid_sample")
        try:
            with torch.no_grad():
                network(example)  # builds the shape-dependent index tables, which export as constants
                return torch.export.export(network, (example,))
        finally:
            deform.set_deform_kernel(previous)


def _save(openvino, model, path: Path) -> None:
    """Writes `model` as `path` (.xml and .bin) so that `path` exists only once it is whole."""
    # A name of this process and thread's own: Ray actors (and servers) sharing a cache may convert
    # the same size at once, and one must never rename the other's half-written file.
    partial = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.partial.xml")
    try:
        openvino.save_model(model, partial, compress_to_fp16=False)
        partial.with_suffix(".bin").replace(path.with_suffix(".bin"))  # the weights first: the .xml marks it done
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
        partial.with_suffix(".bin").unlink(missing_ok=True)


def _progress(message: str) -> None:
    """First-use conversion takes minutes: say so where a user sees it, whatever the logging setup."""
    log.info(message)
    print(message, file=sys.stderr, flush=True)


def _version() -> str:
    """OpenVINO's release (e.g. 2026.4.1): exports are rebuilt when it changes."""
    return importlib.metadata.version("openvino")
