"""The masking oracle: the dense model with every consumer slice of the removed channels set to zero.

Removing channels R from a group is exactly equivalent to keeping the dense model and zeroing the weight
slices that *read* R (role "in" places), because every op between producer and consumer is channel-local.
So run(pruned, x) == run(masked_dense, x) up to float rounding, for any plan. Tests use this to check the
op rules and the rewriter together; it does not depend on how the rewriter slices.
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
