"""Batch norms folded into the convolutions before them, for inference.

An inference-time batch norm is a per-channel scale and shift, so it can be moved into
the weights and bias of the convolution that feeds it: one pass over the feature map
instead of two, and one kernel launch fewer per pair (what a CUDA graph of IS-Net is
mostly made of). A module says which of its convolutions feed which batch norm in its
forward through `CONV_BN_PAIRS`; in an `nn.Sequential` a `Conv2d` directly followed by a
`BatchNorm2d` is such a pair by construction.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def fold_batch_norms(network: nn.Module) -> int:
    """Folds every declared (convolution, batch norm) pair of `network` in place; returns how many.

    Each folded batch norm becomes `nn.Identity`. The arithmetic runs in float32 and the
    result is rounded once to the weights' dtype, so half-precision networks lose nothing
    to the fold itself. Only for inference: the batch norms' running statistics are used.
    """
    folded = 0
    for module in list(network.modules()):
        for conv_name, norm_name in _pairs(module):
            conv, norm = module.get_submodule(conv_name), module.get_submodule(norm_name)
            if isinstance(norm, nn.BatchNorm2d):
                _fold(conv, norm)
                setattr(module, norm_name, nn.Identity())
                folded += 1
    return folded


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    if isinstance(module, nn.Sequential):
        children = list(module.named_children())
        pairs = zip(children, children[1:], strict=False)
        return [(conv, norm) for (conv, layer), (norm, _) in pairs if isinstance(layer, nn.Conv2d)]
    return list(getattr(module, "CONV_BN_PAIRS", ()))


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    dtype = conv.weight.dtype
    bias = None if conv.bias is None else conv.bias.float()
    weight, bias = fuse_conv_bn_weights(
        conv.weight.float(),
        bias,
        norm.running_mean.float(),
        norm.running_var.float(),
        norm.eps,
        norm.weight.float(),
        norm.bias.float(),
    )
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
