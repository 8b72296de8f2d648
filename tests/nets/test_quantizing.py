"""`--precision int8`: fbgemm's int8 linear layers in a float32 CPU network, and where the choice is refused
(IS-Net's int8 on OpenVINO, on real weights: tests/models/test_real_weights.py)."""

from __future__ import annotations

import pytest
import torch
from helpers import golden_input
from torch import nn

from bgremover import bench, synthetic
from bgremover.engines import check_precision_fits, load_engine, pick_dtype, precision_for
from bgremover.engines.pytorch import TorchEngine
from bgremover.engines.quantizing import Int8Linear, quantize_linears
from bgremover.nets.isnet import ISNet

CPU = torch.device("cpu")


def test_int8_linear_stays_close_to_float32_per_row_and_channel() -> None:
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(96, 40)
    with torch.no_grad():
        linear.weight[:20] *= 50  # output channels on very different scales: each gets its own
    x = torch.randn(2, 300, 96, generator=generator)
    expected = linear(x)
    actual = Int8Linear(linear)(x)
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    for channels in (slice(0, 20), slice(20, 40)):
        error = (actual[..., channels] - expected[..., channels]).abs().max()
        assert 0 < error <= 0.03 * expected[..., channels].abs().max()


def test_int8_linear_keeps_a_float_bias_attribute() -> None:
    """The Swin attention fills its padding tokens with `qkv.bias`."""
    linear = nn.Linear(8, 24)
    quantised = Int8Linear(linear)
    assert isinstance(quantised.bias, torch.Tensor) and torch.equal(quantised.bias, linear.bias.detach())
    assert torch.equal(quantised(torch.zeros(3, 8)), linear.bias.detach().expand(3, 24))
    assert Int8Linear(nn.Linear(8, 4, bias=False)).bias is None


def test_quantize_linears_replaces_every_linear_layer() -> None:
    network = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)))
    assert quantize_linears(network) == 3
    assert [type(module).__name__ for module in network.modules()].count("Int8Linear") == 3
    assert quantize_linears(network) == 0  # nothing left to replace


def test_int8_is_refused_where_it_cannot_run() -> None:
    with pytest.raises(ValueError, match="int8 runs on the CPU, not on cuda.*--precision auto"):
        pick_dtype("int8", torch.device("cuda"))
    assert precision_for("openvino", "int8", CPU) == "int8"  # IS-Net's NNCF int8 (test_real_weights.py)
    with pytest.raises(ValueError, match="int8 on the OpenVINO engine is offered for IS-Net only: run BiRefNet"):
        check_precision_fits("int8", "birefnet", "openvino")
    check_precision_fits("int8", "isnet", "openvino")
    check_precision_fits("int8", "birefnet", "torch")
    with pytest.raises(ValueError, match="int8 runs the linear layers in 8 bits, and ISNet has none.*auto or fp32"):
        TorchEngine(ISNet().eval(), synthetic.synthetic_architecture("RMBG-1.4")[1], int8=True)
    network, info = synthetic.synthetic_network("BiRefNet_lite", CPU, torch.bfloat16)
    with pytest.raises(ValueError, match="int8 runs a float32 network on the CPU, not a torch.bfloat16 one"):
        TorchEngine(network, info, int8=True)


def test_bench_offers_int8_on_the_engine_that_has_it_for_the_family() -> None:
    """PyTorch's int8 linear layers for BiRefNet; NNCF's int8 convolutions on OpenVINO for IS-Net."""
    birefnet, isnet = bench.engine_choices("birefnet"), bench.engine_choices("isnet")
    assert ("torch", "int8", False) in birefnet and ("openvino", "int8", False) not in birefnet
    assert ("openvino", "int8", False) in isnet and ("torch", "int8", False) not in isnet


def test_int8_engine_through_the_loader_says_what_runs(offline_hub) -> None:
    engine = load_engine("BiRefNet_lite", "cpu", "int8")
    assert engine.precision == "int8" and engine.dtype == torch.float32
    assert engine.describe().startswith("torch int8 on cpu")
    assert precision_for("torch", "int8", CPU) == "int8"
    output = engine(golden_input(64, 96))
    assert output.shape == (1, 1, 64, 96) and torch.isfinite(output).all()
    assert engine.mode == "eager"


def test_int8_runs_eagerly_even_when_compiling_is_asked_for() -> None:
    network, info = synthetic.synthetic_network("BiRefNet_lite", CPU, torch.float32)
    engine = TorchEngine(network, info, compiled=True, int8=True)
    assert not engine.compiled and "eager" in engine.describe() and "compiled" not in engine.describe()
