"""Engines: the seam between a normalised batch and the network's raw output.

The pipeline prepares a batch (resize, normalise) and reads masks off what comes back;
an engine owns everything in between: the device, the precision, memory layout,
compilation, graph capture, and the lock that keeps one inference per device at a time.
Front ends never build networks themselves; they ask `load_engine` for one (as
segment-anything's predictor receives a built model), so another runtime can take the
PyTorch engine's place without the pipeline or the service changing.
"""

from __future__ import annotations

import threading
from typing import Protocol

import torch

from ..zoo import ModelInfo
from .devices import (
    PRECISION_HELP,
    PRECISIONS,
    device_lock,
    native_bf16_cpu,
    pick_device,
    pick_dtype,
    precision_name,
)

__all__ = [
    "PRECISIONS",
    "PRECISION_HELP",
    "Engine",
    "device_lock",
    "load_engine",
    "native_bf16_cpu",
    "pick_device",
    "pick_dtype",
    "precision_name",
]


class Engine(Protocol):
    """Runs one model: a normalised float batch (B, 3, H, W) in, raw output (B, 1, H, W) as float32 out.

    Callers hold `lock` (the device's, from `device_lock`) around each call.
    """

    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    lock: threading.Lock

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> str:
        """What runs, for logs, the UI status line and bench: runtime, device, precision, kernels."""
        ...


def load_engine(model: str, device: str = "auto", precision: str = "auto", compiled: bool | None = None) -> Engine:
    """The engine for `model` (zoo name, Hub repo id, folder or .safetensors file) on `device`."""
    from .pytorch import TorchEngine

    return TorchEngine.load(model, device, precision, compiled)
