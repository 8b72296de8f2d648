"""Engines: the seam between a normalised batch and the network's raw output.

The pipeline prepares a batch (resize, normalise) and reads masks off what comes back;
an engine owns everything in between: the device, the precision, memory layout,
compilation, graph capture, and the lock that keeps one inference per device at a time.
Front ends never build networks themselves; they ask `load_engine` for one (as
segment-anything's predictor receives a built model), so another runtime can take the
PyTorch engine's place without the pipeline or the service changing.

Words: a *runtime* is the name of what runs a network ("torch", "openvino"; "auto" chooses one),
which the user picks as `--engine` / RMBG_ENGINE; an *engine* is the loaded object (`Engine`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from .. import settings
from ..choices import ENGINE_HELP, ENGINES, PRECISION_HELP
from ..families import find_family
from ..zoo import ModelInfo
from .devices import (
    PRECISIONS,
    Device,
    device_lock,
    int8_hint,
    native_bf16_cpu,
    pick_device,
    pick_dtype,
    precision_name,
    settle_precision,
)

if TYPE_CHECKING:  # PyTorch is imported by the engines that need it: not by OpenVINO's cached exports
    import numpy as np
    import torch

__all__ = [
    "PRECISIONS",
    "PRECISION_HELP",
    "Device",
    "ENGINE_HELP",
    "ENGINES",
    "Engine",
    "check_precision_fits",
    "choose_runtime",
    "device_lock",
    "int8_hint",
    "load_engine",
    "native_bf16_cpu",
    "pick_device",
    "pick_dtype",
    "precision_for",
    "precision_name",
]


class Engine(Protocol):
    """Runs one model: a normalised float batch (B, 3, H, W) in, raw output (B, 1, H, W) as float32 out.

    Callers hold `lock` (the device's, from `device_lock`) around each call. An engine with
    `numpy_io` is fed and answers NumPy arrays (and PyTorch tensors when given them): the
    pipeline then prepares its batches without PyTorch.
    """

    runtime: str  # "torch", "openvino"
    info: ModelInfo
    device: Device | torch.device
    dtype: torch.dtype  # what a batch is cast to before the call
    lock: threading.Lock
    precision: str  # what it computes in, by name: "fp32", "fp16", "bf16", "int8"
    numpy_io: bool

    def __call__(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray: ...

    def prepare(self, hw: tuple[int, int]) -> None:
        """Does the one-time work for inputs of `hw` (height, width: a tensor's order; an image's `size`
        is PIL's width, height) now, so that a caller can time it apart from inference: OpenVINO
        converts and compiles per size on its first input."""
        ...

    def describe(self) -> str:
        """What runs, for logs, the UI status line and bench: runtime, device, precision, kernels."""
        ...


def choose_runtime(
    runtime: str | None, device: Device | torch.device, family: str = "", precision: str = "auto"
) -> str:
    """Which runtime runs a model of `family`: `torch` or `openvino`; `None` follows RMBG_ENGINE.

    `auto` is OpenVINO on a CPU for the families whose record says it wins there (IS-Net,
    RMBG-1.4) when it is installed, at fp32 or bf16, and PyTorch otherwise: OpenVINO ran IS-Net
    faster on both CPU kinds measured, and BiRefNet no faster (or, in bf16, outside the accuracy
    bound). BENCHMARKS.md, "CPU engines", has the figures.
    """
    runtime = settings.engine() if runtime is None else runtime
    if runtime not in ENGINES:
        raise ValueError(f"unknown engine {runtime!r}: use {', '.join(ENGINES)}.")
    if runtime == "auto":
        from .openvino import OPENVINO_PRECISIONS, openvino_available

        known = find_family(family)
        wins = device.type == "cpu" and known is not None and known.openvino_on_cpu
        wins = wins and precision in ("auto", *OPENVINO_PRECISIONS)
        return "openvino" if wins and openvino_available() else "torch"
    if runtime == "openvino" and device.type != "cpu":
        raise ValueError(f"the OpenVINO engine runs on the CPU, not on {device}: use --device cpu or --engine torch.")
    return runtime


def check_precision_fits(precision: str, family: str, runtime: str) -> None:
    """Refuses int8 where `runtime` (torch or openvino, `auto` settled) has none for `family`, from
    the family's record, before any weights are read: the check after loading took seconds and
    ended in a trace. PyTorch quantises linear layers (BiRefNet); OpenVINO, IS-Net's convolutions."""
    known = find_family(family)
    if precision != "int8" or known is None:
        return
    if runtime == "openvino" and not known.openvino_int8:
        raise ValueError(
            f"--precision int8 on the OpenVINO engine is offered for IS-Net only: run {known.known_as} "
            "in int8 with --engine torch, or use --precision auto, bf16 or fp32."
        )
    if runtime == "torch" and not known.int8:
        other = "--engine openvino (NNCF int8; docs/engines.md) or " if known.openvino_int8 else ""
        raise ValueError(
            f"--precision int8 on the PyTorch engine runs the linear layers in 8 bits, and {known.known_as} has "
            f"none (it is all convolutions): use {other}--precision auto, bf16 or fp32."
        )


def precision_for(runtime: str, precision: str, device: Device | torch.device) -> str:
    """The precision a run will use once `auto` is settled; a choice the runtime or CPU cannot run fails here."""
    if runtime == "openvino":
        from .openvino import openvino_precision

        return openvino_precision(precision)
    return settle_precision(precision, device)


def load_engine(
    model: str | ModelInfo,
    device: str | Device | torch.device = "auto",
    precision: str = "auto",
    compiled: bool | None = None,
    runtime: str | None = None,
    *,
    fast_path: bool = True,
    graphs: bool | None = None,
) -> Engine:
    """The engine for `model` (zoo name, Hub repo id, folder or .safetensors file, or the ModelInfo
    they resolved to) on `device`, which is resolved here once and handed down as it is, run by
    `runtime` (`choose_runtime`: None follows RMBG_ENGINE). A
    checkpoint outside the zoo has its family read off its header first, so `auto` chooses for it
    as for the zoo model of the same family.

    `fast_path` and `graphs` are PyTorch's (`TorchEngine`): `fast_path=False` is the plain eager
    network that `rmbg bench` compares every engine with."""
    from ..hub import identify_model, resolve

    device = pick_device(device)
    info = resolve(model)
    family = info.family or identify_model(info).info.family
    chosen = choose_runtime(runtime, device, family, precision)
    check_precision_fits(precision, family, chosen)
    if chosen == "openvino":
        from .openvino import OpenVinoEngine

        return OpenVinoEngine.load(info, precision)
    from .pytorch import TorchEngine

    return TorchEngine.load(info, device, precision, compiled, fast_path, graphs)
