"""IS-Net (RMBG-1.4, DIS general-use) from an ONNX export: every weight is a convolution's.

IS-Net is convolutions, batch norms, ReLUs, max pools and bilinear resizes only, so its whole
state is the 119 convolutions (`convolutions.matched_convs`) plus a batch norm after each
`conv_s1`, kept or folded by the exporter.
"""

from __future__ import annotations

import numpy as np

from .convolutions import conv_tensors, matched_convs, norm_tensors
from .graph import Graph


def isnet_state(graph: Graph) -> dict[str, np.ndarray] | None:
    """The native ISNet state dict held by `graph`, or None when its convolutions are not IS-Net's."""
    from ..nets import ISNet

    matched = matched_convs(ISNet(), graph)
    if matched is None:
        return None
    state: dict[str, np.ndarray] = {}
    for name, module, node in matched:
        state.update(conv_tensors(name, module, node, graph))
        if name.endswith(".conv_s1"):
            state.update(norm_tensors(name.removesuffix("conv_s1") + "bn_s1", module.out_channels, node, graph))
    return state
