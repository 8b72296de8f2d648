"""Which kernel runs BiRefNet's modulated deformable convolutions, and the call that runs it.

The kernels themselves are leaves that import nothing back: `grid_deform.py` (the default,
`grid_sample` and one matmul), `triton_deform.py` (the sampling fused into one Triton kernel,
CUDA, imported only when chosen) and torchvision's `deform_conv2d` (imported on first use).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from .grid_deform import deform_conv2d

# Deformable-convolution kernels: "torchvision" (`torchvision.ops.deform_conv2d`) or
# "grid_sample" (`grid_deform.deform_conv2d`); "auto" picks per device and dtype.
# "grid_sample_native" is ours sampling in the input's dtype instead of float32, and "triton"
# ours with the sampling fused into one Triton kernel (CUDA): both only chosen by name, to
# measure on a GPU what they gain (BENCHMARKS.md, "Next GPU candidate").
DEFORM_KERNELS = ("auto", "torchvision", "grid_sample", "grid_sample_native", "triton")
_deform_kernel = "auto"


def set_deform_kernel(name: str) -> str:
    """Chooses the deformable-convolution kernel of every BiRefNet in this process; returns the previous choice.

    "auto" (the default) is what `deform_kernel_name` describes; "torchvision" or
    "grid_sample" force one, to measure or test them against each other.
    """
    global _deform_kernel
    if name not in DEFORM_KERNELS:
        raise ValueError(f"unknown deformable-convolution kernel {name!r}: use {', '.join(DEFORM_KERNELS)}.")
    if name == "triton" and importlib.util.find_spec("triton") is None:
        raise ValueError(
            "the 'triton' deformable-convolution kernel needs the triton package, which PyTorch's CUDA "
            "wheels for Linux install: install PyTorch with CUDA, or choose another kernel."
        )
    previous, _deform_kernel = _deform_kernel, name
    return previous


def deform_kernel_name(device: torch.device, dtype: torch.dtype) -> str:
    """The kernel `DeformableConv2d` runs on `device` in `dtype`: one of DEFORM_KERNELS but "auto".

    "auto" is ours everywhere. torchvision's CUDA kernel is faster in eager mode, but replayed
    from a CUDA graph it gave wrong masks (measured on an H200: see BENCHMARKS.md), and with
    graph replay ours is the faster path anyway; on the CPU ours is faster and also runs in
    bfloat16. `set_deform_kernel("torchvision")` still selects it, for measurements, as
    `set_deform_kernel("grid_sample_native")` selects ours sampling in `dtype` and
    `set_deform_kernel("triton")` ours with the sampling fused into one Triton kernel.
    """
    return "grid_sample" if _deform_kernel == "auto" else _deform_kernel


def _torchvision_deform_conv2d() -> Callable[..., torch.Tensor]:
    """torchvision's kernel, imported on first use: CPU inference never pays for importing torchvision."""
    from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

    return torchvision_deform_conv2d


def modulated_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    padding: int,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """The modulated deformable convolution, run by the kernel `deform_kernel_name` picks for `x`."""
    kernel = deform_kernel_name(x.device, x.dtype)
    if kernel == "torchvision":
        return _torchvision_deform_conv2d()(x, offset, weight, bias, padding=(padding,) * 2, mask=mask)
    if kernel == "triton":
        from . import triton_deform

        return triton_deform.deform_conv2d(x, offset, weight, padding, mask, bias)
    sampling = x.dtype if kernel == "grid_sample_native" else torch.float32
    return deform_conv2d(x, offset, weight, padding, mask, bias, sampling)
