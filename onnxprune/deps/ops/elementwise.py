"""Element-wise ops: activations, arithmetic with constants, and merges of activations.

- Unary ops (Relu, Sigmoid, HardSwish, Gelu, Erf, Cast, Identity ...) pass channel i to channel i.
- Element-wise ops with several inputs (Add, Sub, Mul, Div, Pow, PRelu, Max, Min, Sum, Mean, Where ...)
  broadcast their inputs (numpy rules) to one output rank:
  - tracked inputs must carry their channels on the same output axis: their layouts are tied together
    (a residual Add, an SE gate Mul, x * Sigmoid(x));
  - a constant with size C on that axis joins the group (role "param") and is sliced with it; size 1
    broadcasts and stays;
  - an untracked activation with size 1 on that axis broadcasts; with more, it blocks the group. Its size is
    looked up through Slices on other axes when inference lost it (GPT-2's causal mask
    `bias[:, :, k - q:k, :k]` is 1 on the head axis).
- Shape vectors holding a channel count (see shape.py) may be multiplied by a positive integer constant
  (HF's `repeat_kv` reshapes to `num_key_value_heads * n_rep`), and pass TorchScript's `expand` guard
  `Where(Equal(shape, -1), 1, shape)` (a count is never -1). Any other arithmetic with them blocks.
"""

from __future__ import annotations

from onnx import numpy_helper

from ...graph import attr
from ..context import ShapeRead
from ..layout import Seg
from ..rules import OpRule

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Mish", "Gelu", "Erf", "ThresholdedRelu", "Swish", "Abs", "Neg", "Exp", "Log", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Atan", "Asin", "Acos", "Sinh",
    "Cosh", "Asinh", "Acosh", "Atanh", "Not", "IsNaN", "IsInf", "CastLike", "Clip",
    "Dropout", "Shrink",
)
ELEMENTWISE = (
    "Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift",
)


def unary_rule(node, ctx) -> None:
    """Input 0 carries the data; other inputs (Clip bounds, Dropout ratio, CastLike target) are scalars."""
    track = ctx.track(node.input[0])
    for i in range(1, len(node.input)):
        if node.input[i] and (ctx.track(node.input[i]) is not None or _numel(ctx, node.input[i]) != 1):
            if node.op_type == "CastLike" and ctx.track(node.input[i]) is None:
                continue
            ctx.block_input(node, i, f"input {i} is not a scalar")
            if track is not None:
                ctx.block(track.layout, node, f"input {i} is not a scalar")
    if track is None:
        return
    for out in node.output:  # Dropout's mask has the data's shape too
        ctx.set_track(out, track.axis, track.layout)


def _identity(node, ctx) -> None:
    """Identity and Cast also carry shape vectors unchanged (Shape -> Cast -> Gather in Paddle exports)."""
    read = ctx.shape_reads.get(node.input[0])
    if read is not None:
        ctx.shape_reads[node.output[0]] = read
    unary_rule(node, ctx)


def _numel(ctx, name: str):
    dims = ctx.dims(name)
    if dims is None or any(not isinstance(d, int) for d in dims):
        return None
    n = 1
    for d in dims:
        n *= d
    return n


def elementwise_rule(node, ctx) -> None:
    reads = [i for i, name in enumerate(node.input) if name in ctx.shape_reads]
    if reads and not _shape_arithmetic(node, ctx, reads):
        for i in reads:
            ctx.block_input(node, i, "computes with a shape that holds a channel count")
    inputs = [(i, name) for i, name in enumerate(node.input) if name]
    tracked = [(i, ctx.track(name)) for i, name in inputs if ctx.track(name) is not None]
    if not tracked:
        return
    ranks = {name: ctx.rank(name) for _, name in inputs}
    out_rank = ctx.rank(node.output[0])
    if out_rank is None and None not in ranks.values():
        out_rank = max(ranks.values())
    if out_rank is None or any(r is None for r in ranks.values()):
        unknown = next((name for name, r in ranks.items() if r is None), node.output[0])
        ctx.block_tracked_inputs(node, ctx.unknown_shape_reason(unknown, f"input '{unknown}'"))
        return
    first_index, first = tracked[0]
    axis = first.axis + out_rank - ranks[node.input[first_index]]
    layout = first.layout
    for index, track in tracked[1:]:
        if track.axis + out_rank - ranks[node.input[index]] != axis:
            ctx.block_tracked_inputs(node, "its inputs carry channels on different axes")
            return
        if not ctx.align(layout, track.layout, node):
            return
    channels = ctx.length(layout)
    for index, name in inputs:
        if ctx.track(name) is not None:
            continue
        local = axis - (out_rank - ranks[name])
        dims = ctx.dims(name)
        size = dims[local] if dims is not None and local >= 0 else 1
        if not isinstance(size, int):
            size = _axis_size(ctx, name, local)
        if size == 1:
            continue
        if ctx.is_constant(name) and size == channels:
            ctx.param(node, index, local, layout, "param")
            continue
        ctx.block(layout, node, ctx.untracked_reason(name, f"input {index} ('{name}')"))
        ctx.block_input(node, index, "its channels meet a group that is blocked")
        return
    ctx.set_track(node.output[0], axis, layout)


def _axis_size(ctx, name: str, axis: int):
    """The static size of axis `axis` of `name` where shape inference lost it: Slices on other axes, Casts,
    Identity and Not keep it; a constant has it."""
    for _ in range(32):
        dims = ctx.dims(name)
        if dims is not None and 0 <= axis < len(dims) and isinstance(dims[axis], int):
            return dims[axis]
        node = ctx.graph.producer.get(name)
        if node is None or ctx.track(name) is not None:
            return None
        if node.op_type == "Slice" and ctx.graph.opset >= 10:
            rank = ctx.rank(node.input[0])
            axes = ctx.graph.int_values(node.input[3]) if len(node.input) > 3 and node.input[3] else None
            if rank is None or axes is None or axis in [a % rank for a in axes]:
                return None
        elif node.op_type not in ("Cast", "Identity", "Not"):
            return None
        name = node.input[0]
    return None


def _shape_arithmetic(node, ctx, reads) -> bool:
    """Follows the few computations on a channel count that keep it a known function of the channels."""
    op, names = node.op_type, list(node.input)
    if op == "Mul" and len(reads) == 1 and len(names) == 2:
        from .shapevec import static_dims  # shapevec reads fill_value from here

        read = ctx.shape_reads[names[reads[0]]]
        factor = ctx.graph.value(names[1 - reads[0]])
        if factor is None:  # a dimension the same for every input: count * 2 directions of an RNN's output
            factor = static_dims(ctx, names[1 - reads[0]])
        if factor is None or factor.dtype.kind not in "iu" or ctx.rank(node.output[0]) != ctx.rank(names[reads[0]]):
            return False
        factor = factor.reshape(-1)
        k = int(factor[0]) if factor.size == 1 else (int(factor[read.position]) if read.position < factor.size else 0)
        if k < 1:
            return False
        layout = tuple(Seg(seg.space, seg.inner * k) for seg in read.layout)
        ctx.shape_reads[node.output[0]] = ShapeRead(layout, read.position, node.name)
        return True
    if op == "Equal" and len(reads) == 1 and len(names) == 2:
        x, other = names[reads[0]], names[1 - reads[0]]
        users = ctx.graph.consumers.get(node.output[0], [])
        return (
            fill_value(ctx, other) is not None and fill_value(ctx, other) < 0 and bool(users)
            and node.output[0] not in ctx.graph.output_names
            and all(u.op_type == "Where" and i == 0 and u.input[2] == x for u, i in users)
        )
    if op == "Where" and reads == [2]:
        cond = ctx.graph.producer.get(names[0])
        if cond is None or cond.op_type != "Equal" or names[2] not in cond.input:
            return False
        other = cond.input[1] if cond.input[0] == names[2] else cond.input[0]
        fill = fill_value(ctx, other)
        if fill is None or fill >= 0:
            return False
        read = ctx.shape_reads[names[2]]  # the count is never negative: Where keeps it
        ctx.shape_reads[node.output[0]] = ShapeRead(read.layout, read.position, node.name)
        return True
    return False


def fill_value(ctx, name: str, depth: int = 0):
    """The one value every entry of `name` holds, where it is known (constants, ConstantOfShape, products)."""
    value = ctx.graph.value(name)
    if value is not None:
        flat = value.reshape(-1)
        return float(flat[0]) if flat.size and (flat == flat[0]).all() else None
    node = ctx.graph.producer.get(name)
    if node is None or depth > 8:
        return None
    if node.op_type == "ConstantOfShape":
        fill = attr(node, "value", None)
        if fill is None:
            return 0.0
        flat = numpy_helper.to_array(fill).reshape(-1)
        return float(flat[0]) if flat.size == 1 else None
    if node.op_type in ("Cast", "Identity"):
        return fill_value(ctx, node.input[0], depth + 1)
    if node.op_type == "Neg":
        inner = fill_value(ctx, node.input[0], depth + 1)
        return None if inner is None else -inner
    if node.op_type == "Mul" and len(node.input) == 2:
        a, b = (fill_value(ctx, n, depth + 1) for n in node.input)
        return None if a is None or b is None else a * b
    return None


RULES = [
    OpRule(UNARY, unary_rule),
    OpRule(("Identity", "Cast"), _identity, reads_shapes=True),
    OpRule(ELEMENTWISE, elementwise_rule, reads_shapes=True),
]
