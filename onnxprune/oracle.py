"""The masking oracle: the dense model with every consumer slice of the removed channels set to zero.

Removing channels R from a group is exactly equivalent to keeping the dense model and zeroing the weight
slices that *read* R (role "in" places), because every op between producer and consumer is channel-local.
So run(pruned, x) == run(masked_dense, x) up to float rounding, for any plan. Tests use this to check the
op rules and the rewriter together; it does not depend on how the rewriter slices.

Removing residual blocks (depth.py) is likewise exactly equivalent to multiplying each removed branch's output
by zero before its Add (`zeroed_branches`); after both, the width oracle applies to the weights that are left.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .deps.context import Analysis
from .deps.layout import Space
from .graph import Graph


def removed_reads(analysis: Analysis, keep: dict[Space, np.ndarray]) -> dict[tuple[str, int], np.ndarray]:
    """(weight, axis) -> positions along that axis that read a removed channel."""
    out: dict[tuple[str, int], np.ndarray] = {}
    for place in analysis.places:
        if place.role != "in":
            continue
        total = analysis.spaces.new_length(place.layout, {})
        kept = analysis.spaces.positions(place.layout, keep)
        removed = np.setdiff1d(np.arange(total), kept)
        if removed.size:
            out[(place.root, place.axis)] = removed
    return out


def masked(dense: onnx.ModelProto, removed: dict[tuple[str, int], np.ndarray]) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(dense)
    graph = Graph(model)
    for (root, axis), positions in removed.items():
        proto = graph.root_proto(root)
        array = numpy_helper.to_array(proto).copy()
        index = [slice(None)] * array.ndim
        index[axis] = positions
        array[tuple(index)] = 0
        proto.CopyFrom(numpy_helper.from_array(array, proto.name))
    return model


def zeroed_branches(dense: onnx.ModelProto, blocks) -> onnx.ModelProto:
    """The depth-pruning oracle: a copy of `dense` whose removed blocks' branches (blocks.Block) are multiplied by
    zero before their Add, so each Add passes its skip input on unchanged. Removing the blocks must equal it."""
    model = onnx.ModelProto()
    model.CopyFrom(dense)
    by_output = {block.output: (i, block) for i, block in enumerate(blocks)}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "Add" and node.output and node.output[0] in by_output:
            i, block = by_output.pop(node.output[0])
            assert node.input[block.branch_index] == block.branch, f"{block.add}: the Add does not read {block.branch}"
            zero = onnx.helper.make_tensor(f"{block.branch}__oracle_zero_{i}", block.elem_type, [], [0])
            model.graph.initializer.append(zero)
            scaled = f"{block.branch}__oracle_zeroed_{i}"
            nodes.append(onnx.helper.make_node("Mul", [block.branch, zero.name], [scaled], name=f"oracle_zero_{i}"))
            node.input[block.branch_index] = scaled
        nodes.append(node)
    assert not by_output, f"no Add writes {sorted(by_output)}"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
