"""Applies a plan to the analyzed model: slices every constant place, then runs the rules' fixes
(group attributes, split sizes, slice bounds, reshape targets, resize sizes).

Works on a copy: `rewrite` returns a new pruned model and leaves the analyzed (dense) model as it was, so one
analysis can be rewritten with several plans. The rules' fixes name the analyzed graph's nodes; the Rewriter's
methods apply what they ask to the same-named node of the copy (Graph names every node uniquely).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .deps.context import Analysis
from .deps.layout import Layout, Space
from .graph import Graph, set_attr, subgraph_outer_names


class Rewriter:
    def __init__(self, analysis: Analysis, keep: dict[Space, np.ndarray]):
        self.analysis = analysis
        self.keep = keep
        model = onnx.ModelProto()
        model.CopyFrom(analysis.graph.model)
        self.graph = Graph(model)  # the copy being rewritten
        self._nodes = {n.name: n for n in model.graph.node}
        self._fresh = 0
        self._sliced: set[str] = set()

    # ---- used by the rules' fixes -----------------------------------------------------------------------
    def new_length(self, layout: Layout) -> int:
        return self.analysis.spaces.new_length(layout, self.keep)

    def positions(self, layout: Layout) -> np.ndarray:
        return self.analysis.spaces.positions(layout, self.keep)

    def node(self, node: onnx.NodeProto) -> onnx.NodeProto:
        """The copy's node of the name of `node` (a node of the analyzed graph, or one of the copy)."""
        return self._nodes[node.name]

    def set_attr(self, node: onnx.NodeProto, name: str, value) -> None:
        set_attr(self.node(node), name, value)

    def remove_attr(self, node: onnx.NodeProto, name: str) -> None:
        attributes = self.node(node).attribute
        for i, a in enumerate(attributes):
            if a.name == name:
                del attributes[i]
                return

    def set_ints(self, node: onnx.NodeProto, index: int, values) -> None:
        """Give input `index` of `node` a new constant of its own (the old one may be shared)."""
        node = self.node(node)
        old = node.input[index] if index < len(node.input) else ""
        dtype = np.int64
        old_value = self.graph.value(old) if old else None
        if old_value is not None and old_value.dtype in (np.int32, np.int64):
            dtype = old_value.dtype
        self._fresh += 1
        self.graph.set_constant_input(node, index, np.asarray(values, dtype=dtype), f"{node.name}__pruned_{index}_{self._fresh}")

    def set_int_entry(self, node: onnx.NodeProto, index: int, position: int, value: int) -> None:
        current = self.graph.value(self.node(node).input[index])
        values = np.asarray(current).reshape(-1).tolist()
        if values[position] != value:
            values[position] = value
            self.set_ints(node, index, np.asarray(values).reshape(np.shape(current)))

    def own_producer(self, reader: onnx.NodeProto, slot: int, producer: onnx.NodeProto) -> onnx.NodeProto:
        """`producer`, which computes input `slot` of `reader`, where nothing else reads its output; else a copy of
        it that only `reader` reads (inserted before `reader`), so that editing it leaves the other readers as
        they were. Returns the copy's node to edit."""
        graph, reader, producer = self.graph.graph, self.node(reader), self.node(producer)
        name = producer.output[0]
        shared = name in {vi.name for vi in graph.output} or any(
            n.name != reader.name and (name in n.input or name in subgraph_outer_names(n)) for n in graph.node
        )
        if not shared:
            return producer
        copy = onnx.NodeProto()
        copy.CopyFrom(producer)
        copy.name = f"{producer.name}__for_{reader.name}"
        copy.output[0] = f"{name}__for_{reader.name}"
        at = next(i for i, n in enumerate(graph.node) if n.name == reader.name)
        graph.node.insert(at, copy)
        reader.input[slot] = copy.output[0]
        self._nodes[copy.name] = graph.node[at]
        return graph.node[at]

    # ---- the whole rewrite ----------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        self._slice_constants()
        for node_name, fix in self.analysis.fixes:
            if node_name in self._nodes:
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
    """A new model: the analyzed one with the channels `keep` does not list removed (space -> kept positions; a
    space not listed keeps all). `analysis` and its model are not changed."""
    return Rewriter(analysis, keep).run()
