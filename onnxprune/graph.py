"""A read-mostly index over a ModelProto: producers, consumers, constants (through aliases) and shapes.

The index never copies weights. Constants are initializers or `Constant` nodes; an `Identity` or `Cast` of
a constant is an *alias* of it, so exporters' Identity chains and fp16 -> fp32 casts of weights resolve to
the tensor that actually holds the data (the *root*), which is what the rewriter slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .shapes import ShapeInfo, infer_shapes, symbolic_shapes

DEFAULT_DOMAINS = ("", "ai.onnx")
ALIAS_OPS = ("Identity", "Cast")


@dataclass(frozen=True)
class Use:
    node: str  # node name, or "<graph output>" / "<subgraph of NAME>"
    index: int


class Graph:
    def __init__(self, model: onnx.ModelProto, input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 shapes: Optional[ShapeInfo] = None):
        """`shapes`: shapes already inferred (else inferred on first use, with `input_shapes` pinned)."""
        self.model = model
        self.graph = model.graph
        _name_nodes(self.graph)
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), onnx.defs.onnx_opset_version()
        )
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.constant_nodes: dict[str, onnx.NodeProto] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in self.graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for i, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, i))
            if _is_constant_node(node):
                self.constant_nodes[node.output[0]] = node
        self.input_names = [vi.name for vi in self.graph.input if vi.name not in self.initializers]
        self.output_names = [vi.name for vi in self.graph.output]
        self._input_shapes = input_shapes
        self._shapes = shapes
        self._root_cache: dict[str, Optional[str]] = {}
        self._unpinned_symbolic: Optional[ShapeInfo] = None

    # ---- nodes -------------------------------------------------------------------------------------
    def nodes(self) -> Iterator[onnx.NodeProto]:
        return iter(self.graph.node)

    def node_by_name(self, name: str) -> onnx.NodeProto:
        for node in self.graph.node:
            if node.name == name:
                return node
        raise KeyError(name)

    # ---- constants ---------------------------------------------------------------------------------
    def is_alias(self, node: onnx.NodeProto) -> bool:
        """An Identity/Cast whose input is a constant: its output is the same constant."""
        return (
            node.op_type in ALIAS_OPS
            and node.domain in DEFAULT_DOMAINS
            and len(node.input) == 1
            and self.constant_root(node.input[0]) is not None
        )

    def constant_root(self, name: str) -> Optional[str]:
        """The initializer or Constant-node output that holds `name`'s data, or None for activations."""
        if name in self._root_cache:
            return self._root_cache[name]
        root: Optional[str] = None
        if name in self.initializers or name in self.constant_nodes:
            root = name
        else:
            node = self.producer.get(name)
            if node is not None and node.op_type in ALIAS_OPS and node.domain in DEFAULT_DOMAINS and node.input:
                root = self.constant_root(node.input[0])
        self._root_cache[name] = root
        return root

    def is_constant(self, name: str) -> bool:
        return bool(name) and self.constant_root(name) is not None

    def root_proto(self, root: str) -> onnx.TensorProto:
        if root in self.initializers:
            return self.initializers[root]
        return self.constant_nodes[root].attribute[0].t

    def const_shape(self, name: str) -> Optional[tuple[int, ...]]:
        root = self.constant_root(name)
        if root is None:
            return None
        return tuple(int(d) for d in self.root_proto(root).dims)

    def value(self, name: str) -> Optional[np.ndarray]:
        """The constant's data as `name` holds it (a fresh array): an alias Cast converts its root's data (Paddle
        writes int32 shape constants and casts them to int64). None for an activation or an empty name."""
        if not name:
            return None
        root = self.constant_root(name)
        if root is None:
            return None
        if name == root:
            return numpy_helper.to_array(self.root_proto(root))
        alias = self.producer[name]
        value = self.value(alias.input[0])
        if alias.op_type == "Cast":
            value = value.astype(helper.tensor_dtype_to_np_dtype(attr(alias, "to")))
        return value

    def int_values(self, name: str) -> Optional[list[int]]:
        value = self.value(name)
        if value is None:
            return None
        return [int(v) for v in np.asarray(value).reshape(-1)]

    # ---- shapes ------------------------------------------------------------------------------------
    @property
    def shapes(self) -> ShapeInfo:
        """Inferred on first use: callers that only need constants (the oracle, the rewriter) skip it."""
        if self._shapes is None:
            self._shapes = infer_shapes(self.model, self._input_shapes)
        return self._shapes

    @property
    def unpinned_symbolic_shapes(self) -> ShapeInfo:
        """onnxruntime's symbolic shape inference of the model with no shape pinned (see `shapes.symbolic_shapes`),
        run on first use: the second opinion a few rules need on which dims are equal for every input."""
        if self._unpinned_symbolic is None:
            self._unpinned_symbolic = symbolic_shapes(self.model, {})
        return self._unpinned_symbolic

    def rank(self, name: str) -> Optional[int]:
        shape = self.const_shape(name)
        if shape is not None:
            return len(shape)
        return self.shapes.rank(name)

    def dims(self, name: str):
        shape = self.const_shape(name)
        if shape is not None:
            return shape
        return self.shapes.dims(name)

    # ---- the few edits the rewriter and recovery make -------------------------------------------------
    def set_constant_input(self, node: onnx.NodeProto, index: int, value: np.ndarray, base: str) -> str:
        """Give input `index` of `node` a new initializer holding `value`, named after `base` (unique);
        the old constant may be shared, so it is left as it is. Returns the new name."""
        name = base
        while name in self.initializers:
            name += "_"
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        self.initializers[name] = self.graph.initializer[-1]
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = name
        return name


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    """Set (or replace) attribute `name` of `node`."""
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def _is_constant_node(node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "Constant"
        and node.domain in DEFAULT_DOMAINS
        and len(node.attribute) == 1
        and node.attribute[0].name == "value"
    )


def node_names(nodes) -> list[str]:
    """The names reports use for `nodes`: a node's own name, else op_type_index; a clash gets _index."""
    names, seen = [], set()
    for i, node in enumerate(nodes):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name: reports, --exclude and fixes all refer to nodes by name."""
    for node, name in zip(graph.node, node_names(graph.node)):
        node.name = name


def subgraph_outer_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing graph."""
    names: set[str] = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
            for inner in g.node:
                for name in inner.input:
                    if name and name not in defined:
                        names.add(name)
                names |= {n for n in subgraph_outer_names(inner) if n not in defined}
                defined |= set(inner.output)
    return names


def drop_unused(model: onnx.ModelProto) -> None:
    """Remove, from `model` in place, the nodes whose outputs nothing reads (a rewrite can leave a chain dead: the
    zero state an omitted RNN input was built by), then the initializers nothing reads any more."""
    graph = model.graph
    outputs = {vi.name for vi in graph.output}
    while True:
        used = {n for node in graph.node for n in node.input} | outputs
        for node in graph.node:
            used |= subgraph_outer_names(node)
        nodes = [n for n in graph.node if any(o and o in used for o in n.output)]
        if len(nodes) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(nodes)
    used |= {vi.name for vi in graph.input}  # an initializer listed as an input (IR < 4 habit) stays declared
    kept = [t for t in graph.initializer if t.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
