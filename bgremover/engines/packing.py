"""bf16 linear layers with their weights packed once for oneDNN, GELU fused into the MLP's first.

On a CPU, `F.linear` in bfloat16 goes to oneDNN with a plain row-major weight, which oneDNN
copies into its own blocked layout on every call; the Swin backbone's linear layers are about
half of RMBG-2.0's forward. Packing each weight once when the engine loads (what
torch.compile's freezing pass does, without its minutes of compiling) and running the MLP's
GELU as the first layer's post-op, in the same pass over its output, made RMBG-2.0's 1024²
bf16 forward 9 % faster on 2 Zen 4 cores (BENCHMARKS.md, "RMBG-2.0's share of the CPU's GEMM
rate"). The residual adds as post-ops too were measured and gained nothing more.

The operators are PyTorch's own (`torch.ops.mkldnn`, the ones Inductor emits); where a build
lacks them the linear layers stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn


def packing_available() -> bool:
    """Whether this PyTorch has oneDNN and its packed-linear operators."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, name) for name in ("_linear_pointwise", "_reorder_linear_weight")
    )


class PackedLinear(nn.Module):
    """A bf16 `nn.Linear` on the CPU with its weight in oneDNN's layout, and an optional post-op
    ("gelu": exact GELU, as `nn.GELU()`). `bias` stays a tensor attribute, as on `nn.Linear`:
    the Swin attention reads it for its padding tokens."""

    def __init__(self, linear: nn.Linear, post: str = "none"):
        super().__init__()
        self.in_features, self.out_features, self.post = linear.in_features, linear.out_features, post
        self.bias = None if linear.bias is None else linear.bias.detach()
        # A plain attribute, not a parameter: an opaque oneDNN tensor that state_dict and .to() cannot handle.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.post, [], "none")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed, post={self.post}"


def pack_linears(network: nn.Module) -> int:
    """Packs every `nn.Linear` of a bf16 CPU network, in place, with the Swin MLP's exact GELU
    fused into its first layer; returns how many linear layers it packed."""
    from ..nets.swin import Mlp

    packed = 0
    for module in list(network.modules()):
        if isinstance(module, Mlp) and module.act.approximate == "none" and type(module.fc1) is nn.Linear:
            module.fc1, module.act = PackedLinear(module.fc1, "gelu"), nn.Identity()
            packed += 1
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, PackedLinear(child))
                packed += 1
    return packed
