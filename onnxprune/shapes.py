"""Shape and dtype inference that never copies the weights.

onnx's inference needs a ModelProto; copying a 25M-parameter model for it would double peak memory.
So inference runs on a skeleton: the same nodes, with every large constant replaced by a graph input
of the same type and shape. Small constants (shape vectors, axes, scalars) keep their data so that
Reshape targets and Shape -> Gather chains still propagate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import helper

Dim = Union[int, str, None]  # a known size, a symbolic name, or unknown
SMALL_CONSTANT_ELEMENTS = 64


@dataclass
class TensorInfo:
    elem_type: int
    dims: Optional[tuple[Dim, ...]]  # None when even the rank is unknown

    @property
    def rank(self) -> Optional[int]:
        return None if self.dims is None else len(self.dims)


@dataclass
class ShapeInfo:
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    def get(self, name: str) -> Optional[TensorInfo]:
        return self.tensors.get(name)

    def dims(self, name: str) -> Optional[tuple[Dim, ...]]:
        info = self.tensors.get(name)
        return None if info is None else info.dims

    def rank(self, name: str) -> Optional[int]:
        info = self.tensors.get(name)
        return None if info is None else info.rank

    def static_dim(self, name: str, axis: int) -> Optional[int]:
        dims = self.dims(name)
        if dims is None or not -len(dims) <= axis < len(dims):
            return None
        value = dims[axis]
        return value if isinstance(value, int) else None


def _numel(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _type_dims(type_proto: onnx.TypeProto) -> tuple[int, Optional[tuple[Dim, ...]]]:
    if not type_proto.HasField("tensor_type"):
        return 0, None
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return tt.elem_type, None
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tt.elem_type, tuple(dims)


def _with_shape(value_info: onnx.ValueInfoProto, shape: Sequence[int]) -> onnx.ValueInfoProto:
    elem_type = value_info.type.tensor_type.elem_type
    return helper.make_tensor_value_info(value_info.name, elem_type, list(shape))


def skeleton(
    model: onnx.ModelProto, input_shapes: Optional[Mapping[str, Sequence[int]]] = None, fold_shapes: bool = True
) -> onnx.ModelProto:
    """A copy of `model` without the data of large constants (they become typed graph inputs)."""
    graph = model.graph
    input_shapes = dict(input_shapes or {})
    inputs = []
    for vi in graph.input:
        inputs.append(_with_shape(vi, input_shapes[vi.name]) if vi.name in input_shapes else vi)
    init_names = {t.name for t in graph.initializer}
    inputs = [vi for vi in inputs if vi.name not in init_names]
    initializers = []
    for t in graph.initializer:
        if _numel(t.dims) <= SMALL_CONSTANT_ELEMENTS:
            initializers.append(t)
        else:
            inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    static_inputs = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in inputs
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")
        and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
    }
    nodes = []
    for node in graph.node:
        if fold_shapes and node.op_type == "Shape" and node.domain in ("", "ai.onnx"):
            nodes.extend(_foldable_shape(node, static_inputs.get(node.input[0])))
            continue
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name == "value" and _numel(attr.t.dims) > SMALL_CONSTANT_ELEMENTS:
                inputs.append(helper.make_tensor_value_info(node.output[0], attr.t.data_type, list(attr.t.dims)))
                continue
        nodes.append(node)
    sk_graph = helper.make_graph(nodes, graph.name or "g", inputs, list(graph.output), initializers)
    sk = helper.make_model(sk_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    sk.functions.extend(model.functions)
    return sk


def _foldable_shape(node: onnx.NodeProto, dims: Optional[list[int]]) -> list[onnx.NodeProto]:
    """Shape of a pinned input is a constant: inference then resolves what exporters compute from it. Any other
    Shape(x, start, end) becomes Slice(Shape(x), start, end), which computes the same: onnx-graphsurgeon (0.6)
    folds a Shape to the whole shape, ignoring start and end."""
    start = next((a.i for a in node.attribute if a.name == "start"), 0)
    end = next((a.i for a in node.attribute if a.name == "end"), None)
    if dims is not None:
        rank = len(dims)
        end = rank if end is None else end
        start = max(0, min(rank, start + rank if start < 0 else start))
        end = max(0, min(rank, end + rank if end < 0 else end))
        value = helper.make_tensor(node.output[0] + "_value", onnx.TensorProto.INT64, [max(0, end - start)],
                                   dims[start:end])
        return [helper.make_node("Constant", [], [node.output[0]], name=node.name, value=value)]
    if start == 0 and end is None:
        return [node]
    whole = node.output[0] + "__whole"
    bounds = [helper.make_node("Constant", [], [f"{whole}_{k}"], value=helper.make_tensor(f"{whole}_{k}", 7, [1], [v]))
              for k, v in (("start", start), ("end", 2**63 - 1 if end is None else end))]
    return [helper.make_node("Shape", [node.input[0]], [whole], name=f"{node.name}__whole"), *bounds,
            helper.make_node("Slice", [whole, f"{whole}_start", f"{whole}_end"], [node.output[0]], name=node.name)]


FOLD_PASSES = 8
FOLD_MAX_BYTES = 1 << 16  # shape arithmetic is small; larger constant tensors (masks, position tables) stay unfolded
SHAPE_VECTOR_MAX = 16  # float tensors this small with static shape are shape arithmetic, not activations


def _onnx_inferred(sk: onnx.ModelProto) -> tuple[onnx.ModelProto, ShapeInfo]:
    try:
        inferred = onnx.shape_inference.infer_shapes(sk, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: an op it cannot type leaves its outputs unknown
        inferred = sk
    info = ShapeInfo()
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        elem_type, dims = _type_dims(vi.type)
        info.tensors[vi.name] = TensorInfo(elem_type, dims)
    for t in g.initializer:
        info.tensors[t.name] = TensorInfo(t.data_type, tuple(int(d) for d in t.dims))
    for node in g.node:  # folded shape arithmetic: Constant nodes hold the values
        if node.op_type == "Constant" and node.output and node.attribute and node.attribute[0].name == "value":
            t = node.attribute[0].t
            info.tensors[node.output[0]] = TensorInfo(t.data_type, tuple(int(d) for d in t.dims))
    return inferred, info


def _unresolved(model: onnx.ModelProto, info: ShapeInfo, static_inputs: bool) -> int:
    """How many node outputs have an unknown rank, or (when every input is static) a dim that is not a number."""
    count = 0
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for name in node.output:
            dims = info.dims(name) if name else ()
            if dims is None or (static_inputs and not all(isinstance(d, int) for d in dims)):
                count += 1
    return count


def infer_shapes(model: onnx.ModelProto, input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> ShapeInfo:
    """Types and shapes of every tensor onnx can infer; `input_shapes` pins dynamic input dims.

    Where onnx loses track behind shape arithmetic (pads or Reshape targets computed from Shape, as torch's F.pad
    exports), that arithmetic is folded to constants (onnx-graphsurgeon, on the weight-free skeleton) and inference
    runs again; onnxruntime's symbolic inference is the last resort for ranks still unknown.
    """
    sk = skeleton(model, input_shapes)
    sk, info = _onnx_inferred(sk)
    static_inputs = all(
        dims is not None and all(isinstance(d, int) for d in dims)
        for dims in (info.dims(vi.name) for vi in sk.graph.input)
    )
    unresolved = _unresolved(model, info, static_inputs)
    for _ in range(FOLD_PASSES if unresolved else 0):
        folded = _fold_shape_arithmetic(sk)
        if folded is None:
            break
        sk, more = _onnx_inferred(folded)
        merge_shapes(info, more)
        left = _unresolved(model, info, static_inputs)
        if left == 0 or left >= unresolved:
            break
        unresolved = left
    if _unresolved(model, info, static_inputs=False):  # some rank is still unknown
        merge_shapes(info, symbolic_shapes(model, input_shapes or {}))
    if _unresolved(model, info, static_inputs=False):  # an op no inference can type: ask onnxruntime
        from .observed_shapes import fill_unknown

        fill_unknown(model, input_shapes, info)
    return info


def infer_generic_shapes(
    model: onnx.ModelProto, generic: Mapping[str, Sequence[int]], pinned: Optional[Mapping[str, Sequence[int]]] = None
) -> tuple[ShapeInfo, bool]:
    """Shapes with every input at `generic` (concrete sizes for the dims `pinned` leaves open, see
    inputs.generic_input_shapes), and True; or, where inference resolves fewer ranks at those sizes than with the
    open dims left symbolic (a model that accepts only some sizes: a text recognizer whose height must pool to 1),
    the symbolic shapes and False."""
    info = infer_shapes(model, generic)
    unknown = _unresolved(model, info, static_inputs=False)
    if unknown == 0 or dict(generic) == dict(pinned or {}):  # nothing left open: nothing to compare with
        return info, True
    symbolic = infer_shapes(model, pinned)
    if _unresolved(model, symbolic, static_inputs=False) < unknown:
        return symbolic, False
    return info, True


def _computes_values(node) -> bool:
    """A node with a floating-point output computes values, not shapes: folding it would hide its tensors' dims
    (a rotary table folded whole takes the MatMul that built it out of the graph). Float scalars and short
    vectors are shape arithmetic (`ceil(H / stride)` in "same" padding) and fold."""
    for out in node.outputs:
        try:
            floating = np.issubdtype(np.dtype(out.dtype), np.floating)
        except TypeError:  # no dtype known, or one numpy does not have (bfloat16 ...)
            floating = out.dtype is not None
        shape = out.shape
        small = shape is not None and all(isinstance(d, int) for d in shape) and int(np.prod(shape)) <= SHAPE_VECTOR_MAX
        if floating and not small:
            return True
    return False


def _fold_shape_arithmetic(sk: onnx.ModelProto) -> Optional[onnx.ModelProto]:
    """`sk` with every small computation on constants and known shapes replaced by its value; None on failure."""
    try:
        import onnx_graphsurgeon as gs

        severity = gs.logger.G_LOGGER.severity
        gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.CRITICAL
        try:
            graph = gs.import_onnx(sk)
            graph.fold_constants(fold_shapes=True, error_ok=True, size_threshold=FOLD_MAX_BYTES,
                                 should_exclude_node=_computes_values)
            return gs.export_onnx(graph.cleanup(remove_unused_graph_inputs=False), do_type_check=False)
        finally:
            gs.logger.G_LOGGER.severity = severity
    except Exception:  # an op onnxruntime cannot evaluate, a graph onnx-graphsurgeon cannot import ...
        return None


def symbolic_shapes(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> ShapeInfo:
    """Second opinion from onnxruntime's symbolic shape inference, on the weight-free skeleton.

    onnx's own inference loses dims behind shape arithmetic it cannot evaluate (Slice bounds computed with Div, as
    in torch's `chunk`; Mod in torch's MultiheadAttention); onnxruntime's evaluates more of it. Best effort: any
    failure returns an empty ShapeInfo.
    """
    log = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        inferred = _run_symbolic_inference(skeleton(model, shapes, fold_shapes=False))
    except Exception:  # an op it does not know, an assertion inside it, a missing sympy ...
        return ShapeInfo()
    finally:
        log.setLevel(level)
    info = ShapeInfo()
    if inferred is None:
        return info
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            dims = tuple(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
            info.tensors[vi.name] = TensorInfo(tt.elem_type, dims)
    return info


def _run_symbolic_inference(sk: onnx.ModelProto) -> Optional[onnx.ModelProto]:
    """The steps of `SymbolicShapeInference.infer_shapes`, but for the one that saves a debug model into the working
    folder when inference stays incomplete: here an incomplete inference returns None, and nothing is written.
    (Methods onnxruntime does not promise to keep: a change there raises, and the caller falls back to nothing.)"""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset

    opset = get_opset(sk)
    if not opset or opset < 7:
        return None
    inference = SymbolicShapeInference(2**31 - 1, True, False, 0)  # int_max, auto_merge, guess_output_rank, verbose
    inference._preprocess(sk)
    complete = False
    while inference.run_:
        complete = inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_ if complete else None


def merge_shapes(info: ShapeInfo, extra: ShapeInfo) -> None:
    """Fill the dims `info` left symbolic or unknown with the numbers `extra` found."""
    for name, more in extra.tensors.items():
        have = info.tensors.get(name)
        if more.dims is None:
            continue
        if have is None or have.dims is None:
            info.tensors[name] = more
        elif len(have.dims) == len(more.dims):
            dims = tuple(h if isinstance(h, int) else m for h, m in zip(have.dims, more.dims))
            info.tensors[name] = TensorInfo(have.elem_type, dims)
