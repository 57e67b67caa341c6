"""Small ONNX models built with ``onnx.helper`` (no torch), with a numpy reference.

The latency contract (:mod:`hpc2edge.testing.latency`) needs a real model that every backend
loads (ONNX Runtime, TensorRT, a recording) and outputs a test computes independently: an MLP
over the flattened clip, input ``frames [N, C, T, H, W]`` -> output ``speed_power [N, 2]``, with
a dynamic batch axis like the exported search-space models. Needs ``onnx`` (the ``dev`` and
``train`` extras).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TinyModel:
    onnx_bytes: bytes
    input_shape: tuple[int, ...]
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def reference(self, x: np.ndarray) -> np.ndarray:
        """What the model computes, in numpy (float64 for a clean reference)."""
        h = np.maximum(x.reshape(x.shape[0], -1).astype(np.float64) @ self.w1 + self.b1, 0.0)
        return np.asarray(h @ self.w2 + self.b2)


def tiny_model(
    input_shape: Sequence[int] = (1, 4, 8, 8), hidden: int = 16, seed: int = 0
) -> TinyModel:
    """Flatten -> MatMul -> Add -> Relu -> MatMul -> Add, weights seeded."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    features = int(np.prod(input_shape))
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32) * 0.1
    w2 = (rng.standard_normal((hidden, 2)) / np.sqrt(hidden)).astype(np.float32)
    b2 = rng.standard_normal(2).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Flatten", ["frames"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["speed_power"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("speed_power", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime >= 1.10 and TensorRT 8.6+
    onnx.checker.check_model(model)
    return TinyModel(model.SerializeToString(), tuple(input_shape), w1, b1, w2, b2)
