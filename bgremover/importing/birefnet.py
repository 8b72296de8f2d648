"""BiRefNet (RMBG-2.0, BiRefNet_lite) from an ONNX export: every weight by the name torch.onnx kept.

A BiRefNet graph is too varied to match by op order as IS-Net is (Swin attention, deformable
convolutions, per-level concatenations), but torch.onnx keeps each parameter's state-dict name as
its initializer's name while it does not compute on it at export time. An export made with
`do_constant_folding=False` (and `training=TrainingMode.PRESERVE`, which keeps the batch norms)
therefore holds every weight under its name and imports exactly, in float32 or float16. The default
export folds batch norms into convolutions, transposes linear weights and gathers the position-bias
tables into unnamed `onnx::*` constants: those are refused, with the count and an example. The
training-only heads, which no inference runs and so no export holds, are imported as zeros.
"""

from __future__ import annotations

import numpy as np

from ..choices import DERIVED_BUFFERS
from .graph import Graph, ImportRefused

_TRAINING_ONLY = ("decoder.conv_ms_spvn_", "decoder.gdt_convs_pred_")
_SHOWN_MISSING = 3
# Plain convolutions of the backbone's stem and of the decoder, named in folded exports too.
_MARKERS = ("bb.patch_embed.proj.weight", "decoder.ipt_blk5.conv1.weight")


def birefnet_state(graph: Graph) -> dict[str, np.ndarray] | None:
    """The native BiRefNet state dict held by `graph`, None when it is no BiRefNet, refused when folded."""
    if not all(name in graph.constants for name in _MARKERS):
        return None
    import torch

    from ..nets import BiRefNet, swin_config_of

    try:
        config = swin_config_of(graph.constants)
    except KeyError as error:  # the position-bias tables that tell the heads were folded away
        raise _folded(graph, [str(error.args[0])]) from error
    with torch.device("meta"):  # shapes only: Swin-L's 220 M weights are never allocated
        expected = BiRefNet(config).state_dict()
    state: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for name, like in expected.items():
        shape = tuple(like.shape)
        if name.endswith(DERIVED_BUFFERS):
            continue
        value = graph.constants.get(name)
        if value is not None and value.shape == shape:
            state[name] = value
        elif name.startswith(_TRAINING_ONLY):
            state[name] = np.zeros(shape, np.float32)
        else:
            missing.append(name)
    if missing:
        raise _folded(graph, missing, len(state) + len(missing))
    return state


def _folded(graph: Graph, missing: list[str], total: int | None = None) -> ImportRefused:
    """The refusal of a BiRefNet graph whose exporter computed weights into unnamed constants."""
    count = f"{len(missing)} of its {total}" if total else "some of its"
    return ImportRefused(
        f"{graph.path.name} is a BiRefNet graph whose exporter folded {count} weights into unnamed constants "
        f"(e.g. {', '.join(missing[:_SHOWN_MISSING])}); only exports that keep every weight under its name "
        "import exactly: re-export with torch.onnx.export(..., do_constant_folding=False, "
        "training=torch.onnx.TrainingMode.PRESERVE)."
    )
