"""Tiny models built in code for the op-rule tests (tests/test_rules_*.py).

    b = Builder()                                   # opset 17, float32, batch dim "N"
    x = b.input("x", ["N", 3, 8, 8])
    y = b.conv(x, 3, 8, name="conv1")               # weight "conv1.w", bias "conv1.b", node "conv1"
    y = b.op("Relu", [y])
    b.output(b.conv(y, 8, 4, name="conv2"))
    model = b.build()

Weights are random normal numbers from a seeded generator (so L1 scores differ between channels). Graph
outputs are declared with the shapes onnx infers, so the oracle check compares full output types.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

Shape = Sequence[Union[int, str]]


def ir_version_for(opset: int) -> int:
    if opset <= 8:
        return 3
    if opset <= 12:
        return 7
    if opset <= 18:
        return 8
    if opset <= 20:
        return 9
    return 10


class Builder:
    def __init__(self, opset: int = 17, *, seed: int = 0, dtype=np.float32, extra_opsets: Sequence[tuple[str, int]] = ()):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.elem = helper.np_dtype_to_tensor_dtype(self.dtype)
        self.extra_opsets = list(extra_opsets)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[str] = []
        self._declared: dict[str, onnx.TypeProto] = {}
        self._count = 0

    # ---- names -----------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    # ---- graph ends --------------------------------------------------------------------------------
    def input(self, name: str, shape: Shape, dtype=None) -> str:
        elem = self.elem if dtype is None else helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def output(self, *names: str, shape: Optional[Shape] = None, dtype=None) -> None:
        """Graph outputs; their types are inferred at build() unless `shape` (and `dtype`) are given."""
        self.outputs.extend(names)
        if shape is not None:
            elem = self.elem if dtype is None else helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
            self._declared.update({n: helper.make_tensor_type_proto(elem, list(shape)) for n in names})

    # ---- constants -----------------------------------------------------------------------------------
    def const(self, value, name: Optional[str] = None, *, dtype=None, as_node: bool = False) -> str:
        """An initializer (or a Constant node) holding `value` (cast to the model dtype unless `dtype`)."""
        arr = np.asarray(value)
        arr = arr.astype(dtype if dtype is not None else (self.dtype if arr.dtype.kind == "f" else arr.dtype))
        name = name or self.fresh("c")
        tensor = numpy_helper.from_array(arr, name)
        if as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"{name}.const", value=tensor))
        else:
            self.initializers.append(tensor)
        return name

    def weight(self, shape: Sequence[int], name: Optional[str] = None, **kw) -> str:
        return self.const(self.rng.standard_normal(tuple(shape)), name, **kw)

    def positive(self, shape: Sequence[int], name: Optional[str] = None, **kw) -> str:
        return self.const(self.rng.uniform(0.5, 1.5, tuple(shape)), name, **kw)

    def ints(self, values: Sequence[int], name: Optional[str] = None) -> str:
        return self.const(np.asarray(values, dtype=np.int64), name)

    def scalar(self, value: float, name: Optional[str] = None) -> str:
        return self.const(np.asarray(value, dtype=self.dtype), name)

    # ---- nodes ---------------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], *, outputs: int = 1, name: Optional[str] = None,
           domain: str = "", **attrs):
        """Add a node; returns its output name (or the list of names when `outputs` > 1)."""
        name = name or self.fresh(op_type.lower())
        outs = [name] if outputs == 1 else [f"{name}.{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain or None, **attrs))
        return outs[0] if outputs == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, *, dims: int = 2, bias: bool = True, group: int = 1,
             name: Optional[str] = None, weight: Optional[str] = None, **attrs) -> str:
        name = name or self.fresh("conv")
        w = weight or self.weight([cout, cin // group, *([k] * dims)], f"{name}.w")
        inputs = [x, w] + ([self.weight([cout], f"{name}.b")] if bias else [])
        attrs.setdefault("pads", [k // 2] * (2 * dims))
        return self.op("Conv", inputs, name=name, group=group, **attrs)

    def bn(self, x: str, c: int, name: Optional[str] = None) -> str:
        name = name or self.fresh("bn")
        scale, b = self.weight([c], f"{name}.scale"), self.weight([c], f"{name}.bias")
        mean, var = self.weight([c], f"{name}.mean"), self.positive([c], f"{name}.var")
        return self.op("BatchNormalization", [x, scale, b, mean, var], name=name)

    def gemm(self, x: str, k: int, n: int, *, name: Optional[str] = None, bias: bool = True, **attrs) -> str:
        name = name or self.fresh("gemm")
        shape = [n, k] if attrs.get("transB") else [k, n]
        inputs = [x, self.weight(shape, f"{name}.w")] + ([self.weight([n], f"{name}.b")] if bias else [])
        return self.op("Gemm", inputs, name=name, **attrs)

    def matmul(self, x: str, k: int, n: int, *, name: Optional[str] = None, bias: bool = True) -> str:
        name = name or self.fresh("matmul")
        y = self.op("MatMul", [x, self.weight([k, n], f"{name}.w")], name=name)
        if bias:
            y = self.op("Add", [y, self.weight([n], f"{name}.b")], name=f"{name}.add")
        return y

    # ---- the model -----------------------------------------------------------------------------------
    def build(self, *, infer_outputs: bool = True) -> onnx.ModelProto:
        outputs = [onnx.ValueInfoProto(name=n) for n in self.outputs]  # typed below, from inference
        graph = helper.make_graph(self.nodes, "test", self.inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.extra_opsets]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version_for(self.opset))
        if infer_outputs:
            inferred = onnx.shape_inference.infer_shapes(model)
            types = {vi.name: vi.type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
            for vi in model.graph.output:
                if vi.name in types and types[vi.name].tensor_type.elem_type:
                    vi.type.CopyFrom(types[vi.name])
        for vi in model.graph.output:
            if vi.name in self._declared:
                vi.type.CopyFrom(self._declared[vi.name])
        return model


# ---- looking at the report ---------------------------------------------------------------------------
def groups_of(result):
    """The GroupReports of a PruneResult or an AnalysisReport."""
    report = getattr(result, "report", result)
    return list(report.groups)


def group_with(result, member: str):
    """The one group that lists node `member`; fails if none or several do."""
    found = [g for g in groups_of(result) if member in g.members]
    assert len(found) == 1, f"{len(found)} groups list {member!r}: {groups_of(result)}"
    return found[0]


def out_groups(result, node: str):
    """The groups whose channels node `node` produces (its weight's output places), in report order."""
    ids = {g.id for g in result.analysis.groups for p in g.places if p.role == "out" and p.node == node}
    return [g for g in groups_of(result) if g.id in ids]


def out_group(result, node: str):
    found = out_groups(result, node)
    assert len(found) == 1, f"{len(found)} groups are produced by {node!r}: {groups_of(result)}"
    return found[0]


def groups_with(result, member: str):
    return [g for g in groups_of(result) if member in g.members]


def prunable(result):
    return [g for g in groups_of(result) if g.prunable]


def blocked(result):
    return [g for g in groups_of(result) if not g.prunable]


def reason_text(group) -> str:
    return " | ".join(group.reasons)


def assert_blocked_by(group, op_type: str, *words: str) -> None:
    """`group` is blocked, and one of its reasons names `op_type` and contains every one of `words`."""
    assert not group.prunable, f"group {group.members} should be blocked"
    for reason in group.reasons:
        if op_type in reason and all(w in reason for w in words):
            return
    raise AssertionError(f"no reason of {group.members} names {op_type} with {words}: {group.reasons}")


def graph_nodes(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type]


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise KeyError(name)


def attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def image_model(batch="N", channels=3) -> onnx.ModelProto:
    b = Builder(seed=2)
    x = b.input("x", [batch, channels, 8, 8])
    y = b.op("Relu", [b.conv(x, channels, 32, name="c1")])
    y = b.op("Relu", [b.conv(y, 32, 32, name="c2")])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    b.output(b.gemm(y, 32, 4, name="fc"), shape=[batch, 4])
    return b.build()


def shared_reshape_target(b: Builder) -> tuple[str, str]:
    r"""Inputs x[N, 3, 4, 4] and z[N, 2] and two Reshapes that read one computed target (outputs yA, yB):

    x -> ConvA(8) -> Relu -> Reshape(t) -> Conv1d(4) -> yA
    x -> ConvB(8) -> Relu -> Reshape(t) -> Conv1d(4) -> yB      t = Concat(Shape(z)[0:1], [8], [16])

    Returns (x, z)."""
    x = b.input("x", ["N", 3, 4, 4])
    z = b.input("z", ["N", 2])
    n = b.op("Slice", [b.op("Shape", [z]), b.ints([0]), b.ints([1])])
    t = b.op("Concat", [n, b.ints([8]), b.ints([16])], axis=0, name="target")
    ra = b.op("Reshape", [b.op("Relu", [b.conv(x, 3, 8, name="convA")]), t], name="reshapeA")
    rb = b.op("Reshape", [b.op("Relu", [b.conv(x, 3, 8, k=1, name="convB")]), t], name="reshapeB")
    b.output(b.conv(ra, 8, 4, dims=1, name="headA"), b.conv(rb, 8, 4, dims=1, name="headB"))
    return x, z


def image_folder(folder, count: int, size=(12, 10)):
    """`count` random RGB PNG files in `folder` (created), named 0.png, 1.png, ..."""
    pil = pytest.importorskip("PIL.Image")
    folder.mkdir(exist_ok=True)
    for i in range(count):
        pixels = (np.random.default_rng(i).random((*size, 3)) * 255).astype(np.uint8)
        pil.fromarray(pixels).save(folder / f"{i}.png")
    return folder
