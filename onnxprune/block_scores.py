"""Scores of removable blocks (blocks.py): how much each branch f(x) adds to its skip path x. Lowest go first.

- with calibration data: ||f(x)|| / ||x|| over every sample, both measured with onnxruntime on the dense model;
- without: a weight proxy, the root-mean-square gain of the branch's last layer: each output channel's weight
  norm, times the per-channel scale between that layer and the Add (a BatchNormalization's gamma / sqrt(var +
  eps), a Mul by a constant such as a layer scale). It ignores what x looks like, so it can be fooled; the
  report says so.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx

from .blocks import Block, is_layer
from .errors import OptionError
from .graph import Graph, attr

WEIGHT_PROXY_NOTE = (
    "blocks were scored by their last layer's weights (no calibration data): a proxy that ignores the activations "
    "and can be fooled, and removing blocks costs accuracy; give --calib to score them by their measured "
    "||f(x)|| / ||x||, and fine-tune the result"
)
SCALE_OPS = ("BatchNormalization", "Mul")


def blocks_to_remove(found: int, depth_ratio: Optional[float], remove_blocks: Optional[int]) -> int:
    """How many of the `found` blocks go: `depth_ratio` of them rounded up, or `remove_blocks` (at most all)."""
    if depth_ratio is not None and remove_blocks is not None:
        raise OptionError("depth_ratio and remove_blocks both set how many blocks go: give one",
                          params=("depth_ratio", "remove_blocks"))
    if depth_ratio is not None:
        if not 0.0 < depth_ratio <= 1.0:
            raise OptionError(f"depth_ratio must be in (0, 1], got {depth_ratio}", params=("depth_ratio",))
        return min(found, math.ceil(depth_ratio * found - 1e-9))
    if remove_blocks is None or remove_blocks < 1:
        raise OptionError(f"remove_blocks must be at least 1, got {remove_blocks}", params=("remove_blocks",))
    return min(found, remove_blocks)


def weight_scores(graph: Graph, blocks: list[Block]) -> list[float]:
    return [_last_layer_gain(graph, block) for block in blocks]


def data_scores(model: onnx.ModelProto, blocks: list[Block], samples, progress=None) -> list[float]:
    """||f(x)|| / ||x|| of each block over all of `samples` (calib.SampleSet), on `model` (not changed)."""
    from .activations import channel_stats

    tensors = {name: -1 for b in blocks for name in (b.skip, b.branch)}  # the axis does not matter: all is summed
    stats = channel_stats(model, tensors, samples, progress)
    norm = {name: math.sqrt(float(s.squares.sum())) for name, s in stats.items()}
    return [norm[b.branch] / max(norm[b.skip], 1e-30) for b in blocks]


def _last_layer_gain(graph: Graph, block: Block) -> float:
    members = set(block.nodes)
    node = graph.producer[block.branch]
    scale = np.ones(1)
    while not is_layer(graph, node):
        if node.op_type in SCALE_OPS:
            scale = _times(scale, _channel_scale(graph, node))
        ahead = [graph.producer[name] for name in node.input
                 if name and not graph.is_constant(name) and name in graph.producer
                 and graph.producer[name].name in members]
        if not ahead:
            return math.inf  # no layer on this path: never chosen before a block that has one
        node = ahead[0]
    gains = _times(_output_norms(graph, node), scale)
    return float(np.sqrt(np.mean(gains ** 2)))


def _channel_scale(graph: Graph, node) -> np.ndarray:
    if node.op_type == "BatchNormalization":
        gamma, var = graph.value(node.input[1]), graph.value(node.input[4])
        if gamma is None or var is None:
            return np.ones(1)
        return np.abs(gamma.astype(np.float64)) / np.sqrt(var.astype(np.float64) + attr(node, "epsilon", 1e-5))
    constant = next((graph.value(n) for n in node.input if graph.is_constant(n)), None)  # Mul
    return np.ones(1) if constant is None else np.abs(constant.astype(np.float64)).reshape(-1)


def _output_norms(graph: Graph, node) -> np.ndarray:
    """The L2 norm of the weights that produce each output channel of a Conv, ConvTranspose, Gemm or MatMul."""
    w = graph.value(node.input[1]).astype(np.float64)
    if node.op_type == "Conv":
        out_axis = 0
    elif node.op_type == "ConvTranspose":
        out_axis = 1
    elif node.op_type == "Gemm":
        out_axis = 0 if attr(node, "transB", 0) else 1
    else:  # MatMul: [..., in, out]
        out_axis = w.ndim - 1
    w = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)
    return np.sqrt((w * w).sum(axis=1))


def _times(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Channel-wise product where the sizes match; otherwise the scale counts by its root mean square."""
    if a.size == b.size or a.size == 1 or b.size == 1:
        return a * b
    return a * float(np.sqrt(np.mean(b ** 2)))
