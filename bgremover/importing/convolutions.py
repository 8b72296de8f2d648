"""Convolutions of a graph matched to a network's, in the order both run them.

An exporter renames the weights it transforms (a batch norm folded into a convolution becomes
`onnx::Conv_1896`), so names cannot say which convolution is which; the order can. torch.onnx
writes nodes in execution order, and this project's networks register their convolutions in
the order their `forward` runs them, so the i-th Conv node is the i-th `nn.Conv2d` module. Each
pair must also agree on shape, stride, padding and dilation, which a different architecture
does not.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from .graph import Graph, ImportRefused, Node

# Batch norms of this project's networks use PyTorch's default epsilon.
_NORM_EPSILON = 1e-5


def conv_modules(network: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The network's convolutions by state-dict name, in registration order."""
    return [(name, module) for name, module in network.named_modules() if isinstance(module, nn.Conv2d)]


def fits(module: nn.Conv2d, node: Node, graph: Graph) -> bool:
    """Whether the Conv node could be this module: same weight shape, stride, padding, dilation, groups
    (`ImportRefused` where the node's weight is not stored in the graph)."""
    weight_shape = graph.constant(node.inputs[1]).shape
    size = len(module.kernel_size)
    pads = list(node.attributes.get("pads", [0] * 2 * size))
    return (
        weight_shape == tuple(module.weight.shape)
        and list(node.attributes.get("strides", [1] * size)) == list(module.stride)
        and list(node.attributes.get("dilations", [1] * size)) == list(module.dilation)
        and pads == [*module.padding, *module.padding]
        and node.attributes.get("group", 1) == module.groups
    )


def conv_tensors(name: str, module: nn.Conv2d, node: Node, graph: Graph) -> dict[str, np.ndarray]:
    """The module's weight (and bias: zeros where the node has none but the module does)."""
    tensors = {f"{name}.weight": graph.constant(node.inputs[1])}
    if module.bias is not None:
        has_bias = len(node.inputs) > 2 and node.inputs[2]
        tensors[f"{name}.bias"] = (
            graph.constant(node.inputs[2]) if has_bias else np.zeros(module.out_channels, np.float32)
        )
    return tensors


def norm_tensors(name: str, channels: int, node: Node, graph: Graph) -> dict[str, np.ndarray]:
    """The batch norm that follows the Conv node: the graph's own where it kept one, else an exact identity.

    A folded export has the norm inside the convolution already; the identity passes its output
    through bit for bit (variance 1 - eps makes 1/sqrt(variance + eps) exactly 1 in float32, and
    folding it again in `nets.folding` multiplies by exactly 1).
    """
    after = graph.consumers(node.outputs[0])
    if len(after) == 1 and after[0].op == "BatchNormalization":
        norm = after[0]
        scale, shift, mean, variance = (graph.constant(value) for value in norm.inputs[1:5])
        epsilon = float(norm.attributes.get("epsilon", _NORM_EPSILON))
        variance = variance + np.float32(epsilon - _NORM_EPSILON) if epsilon != _NORM_EPSILON else variance
    else:
        scale, shift = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        mean, variance = np.zeros(channels, np.float32), np.full(channels, 1 - _NORM_EPSILON, np.float32)
    return {
        f"{name}.weight": scale,
        f"{name}.bias": shift,
        f"{name}.running_mean": mean,
        f"{name}.running_var": variance,
    }


def matched_convs(modules: list[tuple[str, nn.Conv2d]], graph: Graph) -> list[tuple[str, nn.Conv2d, Node]] | None:
    """Each convolution of `modules` with its Conv node, or None when the graph's are not these."""
    nodes = graph.ops("Conv")
    if len(modules) != len(nodes):
        return None
    try:
        pairs = [(name, module, node) for (name, module), node in zip(modules, nodes, strict=True)]
        return pairs if all(fits(module, node, graph) for _, module, node in pairs) else None
    except ImportRefused:
        return None
