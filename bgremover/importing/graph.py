"""Reading an ONNX file's weights without running it: initializers, constants and the ops around them.

Only the `onnx` package's protobuf reader is used (`pip install 'bgremover[import]'`); no
runtime executes the graph. Every way a file can fail to be a usable float export (unreadable,
truncated, quantised) becomes an `ImportRefused` whose message names what was found.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

# Ops of a quantised graph: its weights are int8 codes, not the trained floats.
QUANTISED_OPS = (
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
)
# Ops that pass a weight through unchanged on its way to the op that uses it (fp16 exports cast).
_PASS_THROUGH = ("Cast", "Identity")


class ImportRefused(ValueError):
    """The ONNX file cannot become a native checkpoint; the message names what was found and what to do."""


@dataclass
class Node:
    """One graph node: its op, its inputs and outputs by name, and its attributes as Python values."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass
class Graph:
    """An ONNX graph reduced to what a converter reads: nodes in file order and float32 constants by name."""

    path: Path
    nodes: list[Node]
    constants: dict[str, np.ndarray]

    def ops(self, op: str) -> list[Node]:
        """The nodes of one op type, in file order (execution order for torch.onnx exports)."""
        return [node for node in self.nodes if node.op == op]

    @cached_property
    def _consumers(self) -> dict[str, list[Node]]:
        found: dict[str, list[Node]] = {}
        for node in self.nodes:
            for value in node.inputs:
                found.setdefault(value, []).append(node)
        return found

    def consumers(self, value: str) -> list[Node]:
        """The nodes that take `value` as an input."""
        return self._consumers.get(value, [])

    @cached_property
    def producers(self) -> dict[str, Node]:
        """The node that computes each value, by the value's name."""
        return {output: node for node in self.nodes for output in node.outputs}

    def constant(self, value: str) -> np.ndarray:
        """The float32 array behind `value`, through casts; a refusal when it is computed, not stored."""
        seen = value
        while seen not in self.constants and seen in self.producers and self.producers[seen].op in _PASS_THROUGH:
            seen = self.producers[seen].inputs[0]
        if seen not in self.constants:
            raise ImportRefused(
                f"{self.path.name}: the weight {value!r} is not stored in the graph (incomplete or truncated file?)"
            )
        return self.constants[seen]

    def census(self) -> str:
        """The graph's most frequent ops, for a message about a graph no converter recognises."""
        counts = Counter(node.op for node in self.nodes).most_common(6)
        return ", ".join(f"{count} {op}" for op, count in counts)


def read_graph(path: Path) -> Graph:
    """The graph in `path`, refused with one clear message when it is unreadable or quantised."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except (DecodeError, OSError, ValueError, RuntimeError) as error:
        raise ImportRefused(f"{path.name} is not a readable ONNX file ({_first_line(error)})") from error
    if not model.graph.node:
        raise ImportRefused(f"{path.name} is not a readable ONNX file (it holds no graph)")
    nodes = [
        Node(
            node.op_type,
            node.name,
            list(node.input),
            list(node.output),
            {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
        )
        for node in model.graph.node
    ]
    _refuse_quantised(path, nodes)
    constants = {tensor.name: _float(numpy_helper.to_array(tensor)) for tensor in model.graph.initializer}
    for node in nodes:
        if node.op == "Constant" and "value" in node.attributes:
            constants[node.outputs[0]] = _float(numpy_helper.to_array(node.attributes["value"]))
    return Graph(path, nodes, constants)


def _refuse_quantised(path: Path, nodes: list[Node]) -> None:
    found = Counter(node.op for node in nodes if node.op in QUANTISED_OPS)
    if found:
        listed = ", ".join(f"{count} {op}" for op, count in found.most_common())
        raise ImportRefused(
            f"{path.name} is a quantised graph ({listed}): its int8 weights are not the trained ones. "
            "Import the float32 or float16 export of the model instead."
        )


def _float(array: np.ndarray) -> np.ndarray:
    """Floating arrays as float32 (float16 converts exactly); integer arrays (shapes) unchanged."""
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
