"""ONNX graphs for the import and real-weight tests: an fp16 graph made fp32, and onnxruntime runs.

onnxruntime is a test dependency only (requirements-dev.txt): it is the reference the native
networks are held to, never part of the product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16


def as_float32(source: Path, target: Path) -> Path:
    """A copy of an fp16 graph that computes in float32: the same weights (fp16 converts exactly),
    every cast to fp16 now a cast to fp32, so it is the reference a float32 import must equal."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    for tensor in graph.initializer:
        if tensor.data_type == _FLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == _FLOAT16:
                attribute.i = _FLOAT
            if attribute.name == "value" and attribute.t.data_type == _FLOAT16:
                attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float32)))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == _FLOAT16:
            value.type.tensor_type.elem_type = _FLOAT
    onnx.save(model, str(target))
    return target


def run_onnx(path: Path, batch: np.ndarray, threads: int = 2) -> np.ndarray:
    """The graph's first output for `batch` (float32 NCHW), with onnxruntime on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: batch.astype(np.float32)})[0], dtype=np.float32)


def export_onnx(network, path: Path, size: int, keep_batch_norms: bool = False) -> Path:
    """`network` (eval mode) exported with torch.onnx as a float32 graph for `size`² inputs: batch
    norms folded into the convolutions (the exporter's default) or kept as BatchNormalization nodes.

    One eager forward first fills the network's per-shape caches (BiRefNet's Swin window layouts,
    whose construction the tracer cannot export), so the traced forward reads them as constants.
    The layouts are built afresh under `no_grad`: one an earlier `torch.inference_mode` forward
    cached holds inference tensors, which the traced forward (autograd on, so that the attention
    biases are traced from their tables, not read from a cache) must not use."""
    import torch

    from bgremover.nets import windows

    windows._cached_layout.cache_clear()
    with torch.no_grad():
        network(torch.zeros(1, 3, size, size))
    extra = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False} if keep_batch_norms else {}
    torch.onnx.export(
        network,
        (torch.zeros(1, 3, size, size),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        **extra,
    )
    return path
