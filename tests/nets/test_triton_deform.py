"""The Triton deformable-convolution kernel (`set_deform_kernel("triton")`, meant for CUDA), run on the
CPU through Triton's interpreter against torchvision's float32 kernel and the network's default one."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

import bgremover.nets
from bgremover.nets import deform
from bgremover.nets.birefnet import BiRefNet
from bgremover.nets.swin import SWIN_T

MODULE = "bgremover.nets.triton_deform"


@pytest.fixture
def triton_deform(monkeypatch):
    """The kernel's module imported under TRITON_INTERPRET=1, so that its kernel runs on CPU tensors;
    the network's lazy import finds it too. Dropped afterwards, so no later import inherits it."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    sys.modules.pop(MODULE, None)
    module = importlib.import_module(MODULE)
    previous = deform.set_deform_kernel("auto")
    yield module
    deform.set_deform_kernel(previous)
    sys.modules.pop(MODULE, None)
    delattr(bgremover.nets, "triton_deform")


def _case(batch: int, channels: int, height: int, width: int, kernel: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Input (channels-last), offsets and modulation as strided views of one tensor (as the network
    makes them), and weights of a deformable convolution."""
    generator = torch.Generator().manual_seed(seed)
    taps = kernel * kernel
    x = torch.randn(batch, channels, height, width, generator=generator).contiguous(memory_format=torch.channels_last)
    steering = torch.randn(batch, 3 * taps, height, width, generator=generator).contiguous(
        memory_format=torch.channels_last
    )
    offset, modulator = steering.split([2 * taps, taps], dim=1)
    weight = torch.randn(2 * channels + 1, channels, kernel, kernel, generator=generator) / (channels * taps) ** 0.5
    return x, 3.0 * offset, torch.sigmoid(modulator), weight


@pytest.mark.parametrize(
    ("batch", "channels", "height", "width", "kernel"),
    [(1, 16, 12, 12, 3), (2, 5, 7, 9, 7), (1, 3, 1, 6, 3), (2, 70, 4, 5, 1)],
    ids=["3x3", "7x7-batch-2", "one-row", "1x1-two-channel-blocks"],
)
def test_matches_torchvision(triton_deform, batch: int, channels: int, height: int, width: int, kernel: int) -> None:
    """Offsets of ±3 pixels put many taps partly or wholly outside the image: those read as zero."""
    x, offset, mask, weight = _case(batch, channels, height, width, kernel)
    bias = torch.randn(weight.shape[0])
    expected = torchvision_deform_conv2d(x, offset, weight, bias, padding=(kernel // 2,) * 2, mask=mask)
    actual = triton_deform.deform_conv2d(x, offset, weight, kernel // 2, mask, bias)
    assert actual.shape == expected.shape
    assert actual.is_contiguous(memory_format=torch.channels_last)
    assert (actual - expected).abs().max().item() <= 1e-4


def test_a_planar_input_gives_the_same_result(triton_deform) -> None:
    x, offset, mask, weight = _case(1, 6, 5, 8, 3, seed=3)
    channels_last = triton_deform.deform_conv2d(x, offset, weight, 1, mask)
    assert torch.equal(triton_deform.deform_conv2d(x.contiguous(), offset, weight, 1, mask), channels_last)


def test_chunks_give_the_same_result(triton_deform, monkeypatch) -> None:
    """Chunks of output pixels that cut across rows and images write every pixel exactly once."""
    x, offset, mask, weight = _case(2, 4, 6, 7, 3, seed=1)
    whole = triton_deform.deform_conv2d(x, offset, weight, 1, mask)
    monkeypatch.setattr(triton_deform, "_CHUNK", 36 * 64)  # 64 pixels per chunk: 84 pixels in 2 chunks
    assert (triton_deform.deform_conv2d(x, offset, weight, 1, mask) - whole).abs().max().item() <= 1e-6


def test_half_precision_rounds_only_the_taps(triton_deform) -> None:
    """In float16 the positions and interpolation stay float32: the result is as close to the float32
    one as rounding the inputs and taps to float16 allows."""
    x, offset, mask, weight = _case(1, 8, 10, 10, 3, seed=2)
    expected = torchvision_deform_conv2d(x, offset, weight, padding=(1, 1), mask=mask)
    actual = triton_deform.deform_conv2d(x.half(), offset.half(), weight.half(), 1, mask.half())
    assert actual.dtype == torch.float16
    assert 0 < (actual.float() - expected).abs().max().item() <= 0.02


@pytest.mark.slow
def test_the_network_runs_it_when_chosen(triton_deform, monkeypatch) -> None:
    """Every deformable layer of a BiRefNet goes through the kernel, and the network's output matches
    the default kernel's."""
    calls = []
    torch.manual_seed(0)
    network = BiRefNet(SWIN_T).eval()
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        default = network(image)
        deform.set_deform_kernel("triton")
        launches = triton_deform.deform_conv2d
        monkeypatch.setattr(triton_deform, "deform_conv2d", lambda *a: calls.append(1) or launches(*a))
        fused = network(image)
    assert len(calls) == 4 * 5  # four deformable branches in each of five decoder blocks
    assert (fused - default).abs().max().item() <= 1e-4


def test_refused_without_triton(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)
    with pytest.raises(ValueError, match="needs the triton package"):
        deform.set_deform_kernel("triton")
    assert deform.deform_kernel_name(torch.device("cuda"), torch.float16) == "grid_sample"
