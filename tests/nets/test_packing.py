"""bf16 linear layers packed once for oneDNN, GELU fused (engines/packing.py): the same network,
the route reported, and only where it was measured (bf16 on a CPU)."""

from __future__ import annotations

import torch
from helpers import golden_input
from torch import nn

from bgremover import synthetic
from bgremover.engines import load_engine
from bgremover.engines.packing import PackedLinear, pack_linears
from bgremover.nets.swin import Mlp

CPU = torch.device("cpu")


def test_packed_network_computes_what_the_plain_one_does() -> None:
    plain, _ = synthetic.synthetic_network("BiRefNet_lite", CPU, torch.bfloat16)
    packed, _ = synthetic.synthetic_network("BiRefNet_lite", CPU, torch.bfloat16)
    linears = sum(type(module) is nn.Linear for module in packed.modules())
    mlps = sum(isinstance(module, Mlp) for module in packed.modules())
    assert pack_linears(packed) == linears > mlps > 0  # every linear layer; each MLP's GELU fused into its first
    assert not any(type(module) is nn.Linear or isinstance(module, nn.GELU) for module in packed.modules())
    batch = golden_input(128, 192).to(torch.bfloat16)
    with torch.inference_mode():
        expected, got = torch.sigmoid(plain(batch).float()), torch.sigmoid(packed(batch).float())
    delta = (expected - got).abs() * 255
    assert delta.mean() <= 0.2 and delta.max() <= 2, (delta.mean(), delta.max())  # bf16 rounding (0.06, 0.47 here)


def test_the_engine_packs_bf16_on_the_cpu_only_and_says_so(offline_hub) -> None:
    bf16 = load_engine("BiRefNet_lite", "cpu", "bf16", runtime="torch")
    assert "linear packed" in bf16.describe()
    assert any(isinstance(module, PackedLinear) for module in bf16.network.modules())
    for precision in ("fp32", "int8"):
        other = load_engine("BiRefNet_lite", "cpu", precision, runtime="torch")
        assert "packed" not in other.describe()
        assert not any(isinstance(module, PackedLinear) for module in other.network.modules())
    isnet = load_engine("RMBG-1.4", "cpu", "bf16", runtime="torch")  # no linear layers: nothing packed, nothing said
    assert "packed" not in isnet.describe()
