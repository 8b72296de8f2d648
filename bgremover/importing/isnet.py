"""IS-Net (RMBG-1.4, DIS general-use) from an ONNX export: every weight is a convolution's.

IS-Net is convolutions, batch norms, ReLUs, max pools and bilinear resizes only, so its whole
state is its 119 convolutions (`convolutions.matched_convs`) plus a batch norm after each
`conv_s1`, kept or folded by the exporter. The side heads 2 to 6 only serve training: an export
of a forward that returns the finest mask alone (this project's) has no Conv node for them, and
they are imported as zeros, which no inference reads.
"""

from __future__ import annotations

import numpy as np

from .convolutions import conv_modules, conv_tensors, matched_convs, norm_tensors
from .graph import Graph

_TRAINING_HEADS = ("side2", "side3", "side4", "side5", "side6")


def isnet_state(graph: Graph) -> dict[str, np.ndarray] | None:
    """The native ISNet state dict held by `graph`, or None when its convolutions are not IS-Net's."""
    from ..nets import ISNet

    modules = conv_modules(ISNet())
    inference = [(name, module) for name, module in modules if name not in _TRAINING_HEADS]
    matched = matched_convs(modules, graph) or matched_convs(inference, graph)
    if matched is None:
        return None
    state: dict[str, np.ndarray] = {}
    for name, module in modules:
        if name in _TRAINING_HEADS:
            state[f"{name}.weight"] = np.zeros(module.weight.shape, np.float32)
            state[f"{name}.bias"] = np.zeros(module.out_channels, np.float32)
    for name, module, node in matched:
        state.update(conv_tensors(name, module, node, graph))
        if name.endswith(".conv_s1"):
            state.update(norm_tensors(name.removesuffix("conv_s1") + "bn_s1", module.out_channels, node, graph))
    return state
