"""Which device and which precision a run uses when the user says `auto`.

Free of PyTorch until a GPU may be there: a run on the CPU with OpenVINO's cached export never
imports it (PyTorch alone took 1.2-6 s to import; BENCHMARKS.md, "One photo, fresh process").
"""

from __future__ import annotations

import functools
import glob
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import settings
from ..families import find_family

if TYPE_CHECKING:
    import torch

# The dtype each precision computes in, by name (`torch_dtype`). int8 is a float32 network whose
# linear layers run in 8 bits on the CPU (engines/quantizing.py).
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float32"}
# Device files a GPU driver makes: with none of them PyTorch would see no GPU either, so `auto` is the CPU
# without asking it (NVIDIA, WSL's GPU bridge, ROCm).
_GPU_DEVICE_FILES = ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")


@dataclass(frozen=True)
class Device:
    """A device by name (`type` cpu or cuda, and an index), for code that must not import PyTorch
    to name one; `torch.device(str(device))` is PyTorch's."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


CPU = Device("cpu")


def pick_device(device: str | Device | torch.device = "auto") -> Device:
    """`auto` is the first CUDA GPU when there is one, else the CPU; a device already picked is kept
    as it is, so that the loaders under the pool do not resolve it again."""
    if isinstance(device, Device):
        return device
    name = str(device)
    if name == "cpu" or (name == "auto" and not any(glob.glob(pattern) for pattern in _GPU_DEVICE_FILES)):
        return CPU
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N.") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU here. Use --device cpu.")
    return Device(chosen.type, chosen.index)


def torch_device(device: Device | torch.device) -> torch.device:
    """PyTorch's object for a device picked by `pick_device`."""
    import torch

    return torch.device(str(device))


def torch_dtype(precision: str) -> torch.dtype:
    """The PyTorch dtype a precision name (a key of PRECISIONS) computes in."""
    import torch

    return getattr(torch, PRECISIONS[precision])


@functools.cache
def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), read off the kernel's CPU
    flags (PyTorch's own probe needs PyTorch imported).

    Elsewhere oneDNN emulates bf16 and it is slower than float32, so `auto` keeps fp32 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    if flags:
        return "avx512_bf16" in flags or "amx_bf16" in flags
    import torch  # not Linux: ask PyTorch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def pick_dtype(precision: str, device: Device | torch.device) -> torch.dtype:
    """The PyTorch dtype `precision` computes in on `device`; fails as `settle_precision` does."""
    return torch_dtype(settle_precision(precision, device))


def int8_hint(asked: str, computed: str, device: Device | torch.device, family: str) -> str | None:
    """A pointer to `--precision int8` where `auto` settled on float32 for lack of native bf16 and
    int8 applies (a family with linear layers, BiRefNet), since `auto` leaves it out until its accuracy is
    known on trained weights; None elsewhere, including wherever the user chose a precision."""
    known = find_family(family)
    if asked != "auto" or computed != "fp32" or device.type != "cpu" or known is None or not known.int8:
        return None
    return (
        "this CPU has no native bfloat16, so the network ran in float32; --precision int8 is faster "
        "on such CPUs (check its accuracy on your photos first: docs/engines.md)"
    )


def settle_precision(precision: str, device: Device | torch.device) -> str:
    """The name of what `precision` runs as on `device`: `auto` is fp16 on CUDA, bf16 on a CPU with
    native bf16, else fp32 (BENCHMARKS.md has the trade-off); a choice the device cannot run fails here."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if native_bf16_cpu() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use auto, {', '.join(PRECISIONS)}.")
    if precision == "bf16" and device.type == "cpu" and not native_bf16_cpu() and not settings.emulated_bf16():
        raise ValueError(
            "this CPU has no native bfloat16 (no AVX512-BF16 or AMX), so bf16 would be emulated and run "
            "many times slower than fp32: use --precision auto or fp32 (RMBG_EMULATED_BF16=1 allows it anyway)."
        )
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU, not on {device}: use --precision auto (fp16) there.")
    return precision


def precision_name(dtype: torch.dtype) -> str:
    """'fp32', 'fp16' or 'bf16': how settings, caches and the UI name a dtype (int8 computes in fp32)."""
    return next(name for name, known in PRECISIONS.items() if f"torch.{known}" == str(dtype))


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def device_lock(device: Device | torch.device) -> threading.Lock:
    """The one lock per device that every engine on it holds while it infers.

    Two forwards at once on one GPU are not faster, only twice the activation memory; on a
    CPU they would split the same cores. Only inference takes it: decoding, compositing and
    encoding of other requests go on meanwhile.
    """
    with _locks_guard:
        return _locks.setdefault(str(device), threading.Lock())
