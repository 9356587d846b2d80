"""Kernels per removable block once onnxruntime has optimized the graph (ORT_ENABLE_ALL, CPU).

At small batches a GPU runs a model about as fast as it can launch its kernels, so what a removed block saves
there is its kernels rather than its MACs. onnxruntime fuses nodes (Conv + BatchNormalization + Relu, a
residual Add into the Conv before it, MatMul + scale, bias + Gelu) and names the fused node after one of them, so
an optimized node is assigned to a block when one of its outputs is a tensor a block's node wrote, or else when
its name starts with the name of a block's node or of a tensor one wrote, followed by a separator (the NCHWc
layout pass names a convolution after its output tensor: relu_1_nchwc; the longest such name wins, and relu_10
is not relu_1's). Nodes onnxruntime inserts on its own (layout reorders) belong to no block.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import onnx

from .blocks import Block


def block_kernels(model: onnx.ModelProto, blocks: list[Block]) -> tuple[Optional[list[int]], int, str]:
    """(kernels of each block, kernels of the whole optimized model, a note); (None, 0, why) when onnxruntime
    cannot optimize the model. Node names must be the ones `blocks` use (graph.Graph names unnamed nodes)."""
    optimized, why = _optimized_nodes(model)
    if optimized is None:
        return None, 0, why
    owner: dict[str, int] = {}
    for i, block in enumerate(blocks):
        for name in (*block.nodes, block.add):
            owner[name] = i
    written = {out: owner[node.name] for node in model.graph.node if node.name in owner for out in node.output}
    named = {**owner, **written}  # fused nodes are named after a node or the tensor it wrote ("relu_1_nchwc")
    counts = [0] * len(blocks)
    for node in optimized:
        i = next((written[o] for o in node.output if o in written), None)
        if i is None:  # the longest original name the fused node's name starts with, up to a separator
            name = node.name
            i = next((named[name[:n]] for n in range(len(name), 0, -1)
                      if name[:n] in named and (n == len(name) or not name[n].isalnum())), None)
        if i is not None:
            counts[i] += 1
    return counts, len(optimized), ""


def _optimized_nodes(model: onnx.ModelProto):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="onnxprune-kernels-") as folder:
        path = os.path.join(folder, "optimized.onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = path
        # the weights go to a side file that is never read: only the nodes are counted
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "0")
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return list(onnx.load(path, load_external_data=False).graph.node), ""
        except Exception as exc:  # onnxruntime raises its own exception classes
            text = str(exc).strip().splitlines()
            return None, f"kernels not counted: onnxruntime could not optimize the model ({text[0] if text else exc})"
