"""int8 linear layers for CPUs without native bfloat16 (`--precision int8`).

On an AVX2 CPU the float32 network is compute-bound (BENCHMARKS.md, "CPU engines"), and the
Swin backbone's linear layers are most of its arithmetic. fbgemm, PyTorch's x86 int8 GEMM
library, multiplies them faster in 8 bits: each weight is rounded once per output channel,
the activations are quantised on the fly with one scale per call (dynamic quantisation),
and the result comes back in float32, so everything around the linear layers is unchanged.
The fbgemm operators are used directly: the `torch.ao` module wrappers are deprecated, and
the ones PyTorch points to instead (torchao) were slower than float32 on a CPU without
torch.compile.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class Int8Linear(nn.Module):
    """A float32 linear layer computed by fbgemm with int8 weights and dynamically quantised inputs.

    `bias` stays a float tensor attribute, as on `nn.Linear`: the Swin attention reads it
    for its padding tokens.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        zero_points = torch.zeros(len(scales), dtype=torch.long)
        with warnings.catch_warnings():  # PyTorch flags every quantised-tensor constructor as deprecated
            warnings.simplefilter("ignore")
            quantised = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        self.bias = None if linear.bias is None else linear.bias.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._packed = torch.ops.quantized.linear_prepack(quantised, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reduce_range: 7-bit activations, which fbgemm's AVX2 kernels need to avoid overflowing
        # their 16-bit intermediate sums.
        return torch.ops.quantized.linear_dynamic(x, self._packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_linears(network: nn.Module) -> int:
    """Replaces every `nn.Linear` of a float32 CPU network by an `Int8Linear`, in place; returns how many."""
    replaced = 0
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, Int8Linear(child))
                replaced += 1
    return replaced
