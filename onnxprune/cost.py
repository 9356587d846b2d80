"""Parameters and multiply-accumulates (MACs) per node, from the real tensor shapes.

MACs are counted for the ops that carry almost all of a network's arithmetic: Conv, ConvTranspose, Gemm and
MatMul (weight x activation and activation x activation, e.g. attention), plus their integer / quantized twins.
Elementwise ops, normalizations, pooling and softmax count 0 MACs: they are cheap per element but not free,
which is one reason a measured speedup can fall short of the MAC reduction (see docs/measuring.md).

Dynamic dims that the caller does not pin are taken as 1; `CostReport.unknown_dims` and `notes` say so. `prune` and
`inspect` pin every dim instead (inputs.counting_shapes): batch 1, the rest at calibration or generic sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

import onnx

from .graph import attr, node_names
from .inputs import default_input_shapes, dynamic_dims, model_inputs
from .shapes import ShapeInfo, infer_shapes, merge_shapes, symbolic_shapes

# element types of weights: floats, and the 8- and 4-bit integers of quantized weights (int64/int32 constants are
# shapes, axes and indices, not parameters)
WEIGHT_TYPES = frozenset(
    t
    for t in (
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        getattr(onnx.TensorProto, "INT4", None),
        getattr(onnx.TensorProto, "UINT4", None),
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
        getattr(onnx.TensorProto, "FLOAT8E4M3FN", None),
        getattr(onnx.TensorProto, "FLOAT8E4M3FNUZ", None),
        getattr(onnx.TensorProto, "FLOAT8E5M2", None),
        getattr(onnx.TensorProto, "FLOAT8E5M2FNUZ", None),
    )
    if t is not None
)


@dataclass
class NodeCost:
    op_type: str
    params: int  # floating-point constant elements this node reads (a shared weight counts in each reader)
    macs: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CostReport:
    params: int  # every floating-point initializer and Constant tensor of the model, each counted once
    macs: int
    per_node: dict[str, NodeCost] = field(default_factory=dict)
    unknown_dims: bool = False  # some dim was dynamic or not inferred and was counted as 1 (or a node as 0)
    notes: list[str] = field(default_factory=list)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # the shapes the MACs were counted at

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "unknown_dims": self.unknown_dims,
            "notes": list(self.notes),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "per_node": {name: cost.to_dict() for name, cost in self.per_node.items()},
        }


# ---------------------------------------------------------------------------------------------------------------
# Parameters


def _numel(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _constant_node_params(node: onnx.NodeProto) -> int:
    total = 0
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in WEIGHT_TYPES:
            total += _numel(attr.t.dims)
        elif attr.name == "sparse_value" and attr.type == onnx.AttributeProto.SPARSE_TENSOR:
            if attr.sparse_tensor.values.data_type in WEIGHT_TYPES:
                total += _numel(attr.sparse_tensor.dims)
        elif attr.name == "value_float":
            total += 1
        elif attr.name == "value_floats":
            total += len(attr.floats)
    return total


def _graph_params(graph: onnx.GraphProto) -> tuple[dict[str, int], int]:
    """(weight elements by tensor name for this graph, total including nested subgraphs)."""
    by_name: dict[str, int] = {}
    for t in graph.initializer:
        if t.data_type in WEIGHT_TYPES:
            by_name[t.name] = _numel(t.dims)
    for st in graph.sparse_initializer:
        if st.values.data_type in WEIGHT_TYPES:
            by_name[st.values.name] = _numel(st.dims)
    nested = 0
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            n = _constant_node_params(node)
            if n:
                by_name[node.output[0]] = n
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nested += _graph_params(attr.g)[1]
            elif attr.type == onnx.AttributeProto.GRAPHS:
                nested += sum(_graph_params(g)[1] for g in attr.graphs)
    return by_name, sum(by_name.values()) + nested


# ---------------------------------------------------------------------------------------------------------------
# MACs


class _Dims:
    """Resolves inferred dims to ints (dynamic -> 1) and remembers whether anything was guessed."""

    def __init__(self, info: ShapeInfo):
        self.info = info
        self.guessed = False

    def get(self, name: str) -> Optional[list[int]]:
        if not name:
            return None
        dims = self.info.dims(name)
        if dims is None:
            return None
        out = []
        for d in dims:
            if isinstance(d, int) and d >= 0:
                out.append(d)
            else:
                self.guessed = True
                out.append(1)
        return out


def _conv_macs(node, dims: _Dims, x: int, w: int) -> Optional[int]:
    # Y [N, Cout, *spatial]; W [Cout, Cin/group, *kernel]: MACs = N*Cout*prod(spatial) * Cin/group * prod(kernel)
    y = dims.get(node.output[0])
    wd = dims.get(node.input[w]) if len(node.input) > w else None
    if y is None or len(y) < 2:
        return None
    if wd is None or len(wd) < 2:
        xd = dims.get(node.input[x])
        kernel = attr(node, "kernel_shape", None)
        if xd is None or len(xd) < 2 or kernel is None:
            return None
        group = int(attr(node, "group", 1))
        wd = [y[1], xd[1] // max(group, 1), *kernel]
    return _numel(y) * _numel(wd[1:])


def _conv_transpose_macs(node, dims: _Dims) -> Optional[int]:
    # every input element is multiplied into Cout/group * prod(kernel) outputs; W [Cin, Cout/group, *kernel]
    xd = dims.get(node.input[0])
    wd = dims.get(node.input[1]) if len(node.input) > 1 else None
    if xd is None or wd is None or len(xd) < 2 or len(wd) < 2:
        return None
    return _numel(xd) * _numel(wd[1:])


def _gemm_macs(node, dims: _Dims) -> Optional[int]:
    a, b = dims.get(node.input[0]), dims.get(node.input[1])
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    trans_a, trans_b = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
    n = b[0] if trans_b else b[1]
    return m * k * n


def _matmul_macs(node, dims: _Dims, ia: int, ib: int) -> Optional[int]:
    a, b = dims.get(node.input[ia]), dims.get(node.input[ib])
    if a is None or b is None or not a or not b:
        return None
    a = [1, *a] if len(a) == 1 else a
    b = [*b, 1] if len(b) == 1 else b
    batch_a, batch_b = a[:-2], b[:-2]
    rank = max(len(batch_a), len(batch_b))
    batch_a = [1] * (rank - len(batch_a)) + batch_a
    batch_b = [1] * (rank - len(batch_b)) + batch_b
    batch = [max(p, q) if 1 in (p, q) else p for p, q in zip(batch_a, batch_b)]
    return _numel(batch) * a[-2] * a[-1] * b[-1]


def _attention_macs(node, dims: _Dims) -> Optional[int]:
    # com.microsoft Attention: input [B, S, Hin] x packed QKV weight [Hin, Hq + Hk + Hv], then per head
    # Q K^T (S x S x D) and attention x V (S x S x D): B*S*Hin*(Hq+Hk+Hv) + B*S*S*(Hq + Hv)
    x, w = dims.get(node.input[0]), dims.get(node.input[1]) if len(node.input) > 1 else None
    if x is None or w is None or len(x) != 3 or len(w) != 2:
        return None
    batch, seq, _ = x
    sizes = attr(node, "qkv_hidden_sizes", None) or [w[1] // 3] * 3
    return batch * seq * w[0] * w[1] + batch * seq * seq * (sizes[0] + sizes[2])


def _mha_macs(node, dims: _Dims) -> Optional[int]:
    # com.microsoft MultiHeadAttention on projected query [B, S, Hq], key [B, L, Hk], value [B, L, Hv]
    q = dims.get(node.input[0])
    k = dims.get(node.input[1]) if len(node.input) > 1 else None
    v = dims.get(node.input[2]) if len(node.input) > 2 else None
    if q is None or k is None or v is None or len(q) != 3 or len(k) != 3 or len(v) != 3:
        return None
    return q[0] * q[1] * k[1] * (q[2] + v[2])


def _recurrent_macs(node, dims: _Dims) -> Optional[int]:
    # X [seq, batch, in] (or [batch, seq, in]); W [dirs, gates*H, in]; R [dirs, gates*H, H]: every step of every
    # direction multiplies x by W and the previous h by R
    x, w = dims.get(node.input[0]), dims.get(node.input[1]) if len(node.input) > 1 else None
    r = dims.get(node.input[2]) if len(node.input) > 2 else None
    if x is None or w is None or r is None or len(x) != 3 or len(w) != 3 or len(r) != 3:
        return None
    return x[0] * x[1] * w[0] * w[1] * (w[2] + r[2])


_CONTRIB_MAC_RULES = {"Attention": _attention_macs, "MultiHeadAttention": _mha_macs}

_MAC_RULES = {
    "Conv": lambda n, d: _conv_macs(n, d, 0, 1),
    "ConvInteger": lambda n, d: _conv_macs(n, d, 0, 1),
    "QLinearConv": lambda n, d: _conv_macs(n, d, 0, 3),
    "ConvTranspose": _conv_transpose_macs,
    "Gemm": _gemm_macs,
    "MatMul": lambda n, d: _matmul_macs(n, d, 0, 1),
    "MatMulInteger": lambda n, d: _matmul_macs(n, d, 0, 1),
    "QLinearMatMul": lambda n, d: _matmul_macs(n, d, 0, 3),
    "LSTM": _recurrent_macs,
    "GRU": _recurrent_macs,
    "RNN": _recurrent_macs,
}


def _node_macs(nodes, names, dims: _Dims) -> dict[str, tuple[Optional[int], bool]]:
    """MACs (None: not inferable) and whether a dim was guessed, for every node with a MAC rule."""
    out = {}
    for name, node in zip(names, nodes):
        rule = (_MAC_RULES.get(node.op_type) if node.domain in ("", "ai.onnx")
                else _CONTRIB_MAC_RULES.get(node.op_type) if node.domain == "com.microsoft" else None)
        if rule is not None:
            dims.guessed = False
            value = rule(node, dims)
            out[name] = (None if value is None else int(value), dims.guessed)
    return out


def count_cost(model: onnx.ModelProto, input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> CostReport:
    """Parameters and MACs of `model` at `input_shapes` (partial is fine: dynamic dims left open count as 1)."""
    shapes = default_input_shapes(model, input_shapes)
    notes: list[str] = []
    unknown = False
    pinned = dict(input_shapes or {})
    for name, axes in dynamic_dims(model).items():
        if axes and name not in pinned:
            unknown = True
            notes.append(f"input {name!r}: dynamic dims {axes} counted as 1 (pin them with --shape)")
    for spec in model_inputs(model):
        if spec.dims is None and spec.name not in shapes:
            unknown = True
            notes.append(f"input {spec.name!r}: the model does not state its shape")

    graph = model.graph
    names = node_names(graph.node)
    by_name, total_params = _graph_params(graph)
    info = infer_shapes(model, shapes)
    macs_of = _node_macs(graph.node, names, _Dims(info))
    # onnxruntime's symbolic inference is slow to import and run: ask it only where a count is unknown, or
    # where every input dim was pinned and a node still reads an unresolved dim
    if any(value is None or (guessed and not unknown) for value, guessed in macs_of.values()):
        merge_shapes(info, symbolic_shapes(model, shapes))
        macs_of = _node_macs(graph.node, names, _Dims(info))

    per_node: dict[str, NodeCost] = {}
    total_macs = 0
    has_subgraph = False
    guessed_nodes: list[str] = []
    for name, node in zip(names, graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue  # its tensor counts in the nodes that read it
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            has_subgraph = True
        params = sum(by_name.get(i, 0) for i in dict.fromkeys(node.input) if i)
        macs = 0
        if name in macs_of:
            value, guessed = macs_of[name]
            if guessed:
                guessed_nodes.append(name)
            if value is None:
                unknown = True
                notes.append(f"node {name!r} ({node.op_type}): shapes could not be inferred, MACs counted as 0")
            else:
                macs = value
        per_node[name] = NodeCost(node.op_type, int(params), macs)
        total_macs += macs
    if guessed_nodes:
        unknown = True
        shown = ", ".join(repr(n) for n in guessed_nodes[:5]) + (" ..." if len(guessed_nodes) > 5 else "")
        notes.append(
            f"{len(guessed_nodes)} node(s) read dims that shape inference left symbolic, counted as 1 "
            f"(MACs are a lower bound): {shown}"
        )
    if has_subgraph:
        notes.append("nodes inside subgraphs (If/Loop/Scan) are not counted in MACs")
    return CostReport(
        params=int(total_params),
        macs=int(total_macs),
        per_node=per_node,
        unknown_dims=unknown,
        notes=notes,
        input_shapes=shapes,
    )
