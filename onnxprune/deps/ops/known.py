"""What the analysis can know of a computed int vector, entry by entry, for every input the model accepts.

Exporters compute pads, Resize scales and sizes from the input's dimensions: `F.pad` with pads computed
from `x.shape` (timm's "same" padding, TensorFlow's SAME on dynamic sizes) becomes
`Concat(computed spatial pads, ConstantOfShape(zeros)) -> Reshape -> reversed Slice -> Transpose -> Reshape`.
The entries for the spatial axes depend on the image size; the entries for the channel axis are zeros no
matter what. `known_values` evaluates such a chain with numpy, carrying for each entry whether it is known:
constants and ConstantOfShape are known; the entries of `Shape` of an activation are not (even where shape
inference, or a pinned `--shape`, knows them: the model must be right for every input); the length of a
1-D vector is. Ops that move entries (Concat, Gather, Slice, Reshape, Transpose, Squeeze, Unsqueeze,
Expand, Cast) move the knowledge with them; arithmetic knows an entry where all its operands do. Anything
else leaves the whole tensor unknown (with the shape inference gives it, where static).

A channel count read out of a Shape never reaches a known entry: it is not known here, and the shape-read
rules (shape.py) block a group whose count flows into arithmetic.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from onnx import helper, numpy_helper

from ...graph import attr

Known = tuple[np.ndarray, np.ndarray]  # (values, known): unknown entries hold a placeholder 1
MAX_DEPTH = 64
MAX_ELEMENTS = 4096  # shape vectors are short; anything larger is not a shape computation

_ARITHMETIC = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum,
    "Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or,
}
_UNARY = {"Ceil": np.ceil, "Floor": np.floor, "Neg": np.negative, "Abs": np.abs, "Round": np.round, "Not": np.logical_not}


def known_values(ctx, name: str) -> Optional[Known]:
    """The values of int/float vector `name` and which of them are known, or None where not even its shape is."""
    return _eval(ctx, name, {}, 0)


def _eval(ctx, name: str, memo: dict, depth: int) -> Optional[Known]:
    if name in memo:
        return memo[name]
    value = ctx.graph.value(name)
    if value is not None:
        result = (value, np.ones(value.shape, bool)) if value.size <= MAX_ELEMENTS else None
    else:
        node = ctx.graph.producer.get(name)
        result = None
        if node is not None and depth < MAX_DEPTH and len(node.output) == 1:
            result = _node(ctx, node, memo, depth)
        if result is None:
            result = _unknown(ctx, name)
    memo[name] = result
    return result


def _unknown(ctx, name: str) -> Optional[Known]:
    dims = ctx.dims(name)
    if dims is None or not all(isinstance(d, int) for d in dims) or int(np.prod(dims)) > MAX_ELEMENTS:
        return None
    return np.ones(dims, np.int64), np.zeros(dims, bool)


def _node(ctx, node, memo: dict, depth: int) -> Optional[Known]:
    op = node.op_type

    def get(i: int) -> Optional[Known]:
        return _eval(ctx, node.input[i], memo, depth + 1) if i < len(node.input) and node.input[i] else None

    def params(i: int, attr_name: str = ""):
        """A fully known parameter input (older opsets: the attribute) as a list of ints."""
        got = get(i)
        if got is not None:
            return [int(v) for v in got[0].reshape(-1)] if got[1].all() else None
        value = attr(node, attr_name, None) if attr_name else None
        return None if value is None else [int(v) for v in value]

    if op == "Shape":
        return _shape(ctx, node)
    if op == "ConstantOfShape":
        shape = params(0)
        if shape is None or int(np.prod(shape)) > MAX_ELEMENTS:
            return None
        fill = attr(node, "value", None)
        fill = numpy_helper.to_array(fill).reshape(-1) if fill is not None else np.zeros(1, np.float32)
        return np.full(shape, fill[0], fill.dtype), np.ones(shape, bool)
    if op in ("Identity", "Cast"):
        x = get(0)
        if x is None or op == "Identity":
            return x
        return x[0].astype(helper.tensor_dtype_to_np_dtype(int(attr(node, "to")))), x[1]
    if op in _UNARY:
        x = get(0)
        return None if x is None else (_UNARY[op](x[0]), x[1])
    if op in _ARITHMETIC or op == "Div":
        operands = [get(i) for i in range(len(node.input))]
        if not operands or any(o is None for o in operands):
            return None
        values, known = operands[0]
        for v, k in operands[1:]:
            values = _divide(values, v) if op == "Div" else _ARITHMETIC[op](values, v)
            known = known & k
        return values, np.broadcast_to(known, values.shape)
    if op == "Where":
        c, x, y = get(0), get(1), get(2)
        if c is None or x is None or y is None:
            return None
        values = np.where(c[0], x[0], y[0])
        return values, np.broadcast_to(c[1] & x[1] & y[1], values.shape)
    return _move(node, op, get, params)


def _move(node, op, get, params) -> Optional[Known]:
    """Ops that only move entries: the same move applied to the values and to what is known of them."""
    if op == "Concat":
        parts = [get(i) for i in range(len(node.input))]
        if any(p is None for p in parts):
            return None
        axis = int(attr(node, "axis"))
        return tuple(np.concatenate([p[j] for p in parts], axis) for j in (0, 1))
    x = get(0)
    if x is None:
        return None
    if op == "Transpose":
        perm = attr(node, "perm", None)
        return tuple(np.transpose(a, perm) for a in x)
    if op == "Gather":
        indices = get(1)
        if indices is None or not indices[1].all():
            return None
        return tuple(np.take(a, indices[0].astype(np.int64), axis=int(attr(node, "axis", 0))) for a in x)
    if op == "Reshape":
        shape = params(1, "shape")
        if shape is None:
            return None
        if not attr(node, "allowzero", 0):
            shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return tuple(np.reshape(a, shape) for a in x)
    if op in ("Squeeze", "Unsqueeze"):
        axes = params(1, "axes")
        if op == "Unsqueeze":
            if axes is None:
                return None
            rank = x[0].ndim + len(axes)
            return tuple(np.expand_dims(a, tuple(sorted(ax % rank for ax in axes))) for a in x)
        axes = tuple(ax % x[0].ndim for ax in axes) if axes is not None else None
        return tuple(np.squeeze(a, axes) for a in x)
    if op == "Slice":
        return _slice(node, x, params)
    if op == "Expand":
        shape = params(1)
        if shape is None:
            return None
        target = np.broadcast_shapes(x[0].shape, tuple(shape))
        return tuple(np.broadcast_to(a, target) for a in x)
    return None


def _slice(node, x: Known, params) -> Optional[Known]:
    starts, ends = params(1, "starts"), params(2, "ends")
    axes, steps = params(3, "axes"), params(4)
    if starts is None or ends is None:
        return None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)) or 0 in steps:
        return None
    index = [slice(None)] * x[0].ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis % x[0].ndim] = slice(start, end, step)  # numpy clamps out-of-range bounds as ONNX does
    return tuple(a[tuple(index)] for a in x)


def _shape(ctx, node) -> Optional[Known]:
    """Shape(x): its length is known where x's rank is; its entries only where x is itself a vector of static
    length (the shape of a shape vector), never the dimensions of an activation."""
    source = node.input[0]
    rank = ctx.rank(source)
    if rank is None:
        return None
    start, end = int(attr(node, "start", 0)), int(attr(node, "end", rank))
    picked = list(range(rank))[start:end]
    dims = ctx.dims(source)
    static = rank == 1 and ctx.track(source) is None and dims is not None and isinstance(dims[0], int)
    values = np.array([dims[i] if static else 1 for i in picked], np.int64)
    return values, np.full(values.shape, static, bool)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: integer division truncates toward zero; unknown entries hold 1, so nothing divides by them."""
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        b = np.where(b == 0, 1, b)
        q = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -q, q)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(a, b)
