"""Applies a plan to the analyzed model: slices every constant place, then runs the rules' fixes
(group attributes, split sizes, slice bounds, reshape targets, resize sizes).

The model is changed in place; callers that must keep the dense model pass a copy to the analysis.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .deps.context import Analysis
from .deps.layout import Layout, Space
from .graph import set_attr


class Rewriter:
    def __init__(self, analysis: Analysis, keep: dict[Space, np.ndarray]):
        self.analysis = analysis
        self.graph = analysis.graph
        self.keep = keep
        self._fresh = 0
        self._sliced: set[str] = set()

    # ---- used by the rules' fixes -----------------------------------------------------------------------
    def new_length(self, layout: Layout) -> int:
        return self.analysis.spaces.new_length(layout, self.keep)

    def positions(self, layout: Layout) -> np.ndarray:
        return self.analysis.spaces.positions(layout, self.keep)

    def set_attr(self, node: onnx.NodeProto, name: str, value) -> None:
        set_attr(node, name, value)

    def remove_attr(self, node: onnx.NodeProto, name: str) -> None:
        for i, a in enumerate(node.attribute):
            if a.name == name:
                del node.attribute[i]
                return

    def set_ints(self, node: onnx.NodeProto, index: int, values) -> None:
        """Give input `index` of `node` a new constant of its own (the old one may be shared)."""
        old = node.input[index] if index < len(node.input) else ""
        dtype = np.int64
        old_value = self.graph.value(old) if old else None
        if old_value is not None and old_value.dtype in (np.int32, np.int64):
            dtype = old_value.dtype
        self._fresh += 1
        self.graph.set_constant_input(node, index, np.asarray(values, dtype=dtype), f"{node.name}__pruned_{index}_{self._fresh}")

    def set_int_entry(self, node: onnx.NodeProto, index: int, position: int, value: int) -> None:
        current = self.graph.value(node.input[index])
        values = np.asarray(current).reshape(-1).tolist()
        if values[position] != value:
            values[position] = value
            self.set_ints(node, index, np.asarray(values).reshape(np.shape(current)))

    # ---- the whole rewrite ----------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        self._slice_constants()
        nodes = {n.name: n for n in self.graph.graph.node}
        for node_name, fix in self.analysis.fixes:
            if node_name in nodes:
                fix(self)
        self._drop_stale_value_info()
        return self.graph.model

    def _slice_constants(self) -> None:
        axes_of: dict[str, dict[int, Layout]] = {}
        for place in self.analysis.places:
            axes_of.setdefault(place.root, {}).setdefault(place.axis, place.layout)
        for root, axes in axes_of.items():
            proto = self.graph.root_proto(root)
            cuts = {}
            for axis, layout in axes.items():
                positions = self.positions(layout)
                if len(positions) != proto.dims[axis]:
                    cuts[axis] = positions
            if not cuts:
                continue
            array = numpy_helper.to_array(proto)
            for axis, positions in cuts.items():
                array = np.take(array, positions, axis=axis)
            proto.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), proto.name))
            self._sliced.add(root)
            self._update_declared_input(root, array.shape)

    def _update_declared_input(self, name: str, shape) -> None:
        """Models of IR < 4 also declare initializers as graph inputs, with their shapes."""
        for vi in self.graph.graph.input:
            if vi.name == name and vi.type.HasField("tensor_type"):
                elem = vi.type.tensor_type.elem_type
                vi.type.tensor_type.shape.CopyFrom(helper.make_tensor_type_proto(elem, list(shape)).tensor_type.shape)

    def _drop_stale_value_info(self) -> None:
        """Declared shapes of narrowed tensors are stale: drop them (onnx and onnxruntime re-infer)."""
        tracked, graph = self.analysis.tracks, self.graph

        def stale(name: str) -> bool:
            return name in tracked or (graph.constant_root(name) in self._sliced)

        kept = [vi for vi in self.graph.graph.value_info if not stale(vi.name)]
        del self.graph.graph.value_info[:]
        self.graph.graph.value_info.extend(kept)


def rewrite(analysis: Analysis, keep: dict[Space, np.ndarray]) -> onnx.ModelProto:
    return Rewriter(analysis, keep).run()
