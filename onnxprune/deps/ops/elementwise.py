"""Element-wise ops: activations, arithmetic with constants, and merges of activations.

- Unary ops (Relu, Sigmoid, HardSwish, Gelu, Erf, Cast, Identity ...) pass channel i to channel i.
- Element-wise ops with several inputs (Add, Sub, Mul, Div, Pow, PRelu, Max, Min, Sum, Mean, Where ...)
  broadcast their inputs (numpy rules) to one output rank:
  - tracked inputs must carry their channels on the same output axis: their layouts are tied together
    (a residual Add, an SE gate Mul, x * Sigmoid(x));
  - a constant with size C on that axis joins the group (role "param") and is sliced with it; size 1
    broadcasts and stays;
  - an untracked activation with size 1 on that axis broadcasts; with more, it blocks the group.
"""

from __future__ import annotations

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


def _unary(node, ctx) -> None:
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
    _unary(node, ctx)


def _numel(ctx, name: str):
    dims = ctx.dims(name)
    if dims is None or any(not isinstance(d, int) for d in dims):
        return None
    n = 1
    for d in dims:
        n *= d
    return n


def _elementwise(node, ctx) -> None:
    inputs = [(i, name) for i, name in enumerate(node.input) if name]
    tracked = [(i, ctx.track(name)) for i, name in inputs if ctx.track(name) is not None]
    if not tracked:
        return
    ranks = {name: ctx.rank(name) for _, name in inputs}
    out_rank = ctx.rank(node.output[0])
    if out_rank is None and None not in ranks.values():
        out_rank = max(ranks.values())
    if out_rank is None or any(r is None for r in ranks.values()):
        ctx.block_tracked_inputs(node, "the ranks of its inputs are unknown")
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
        if size == 1:
            continue
        if ctx.is_constant(name) and size == channels:
            ctx.param(node, index, local, layout, "param")
            continue
        ctx.block(layout, node, f"input {index} ('{name}') has channels that cannot be pruned")
        ctx.block_input(node, index, "its channels meet a group that is blocked")
        return
    ctx.set_track(node.output[0], axis, layout)


RULES = [
    OpRule(UNARY, _unary),
    OpRule(("Identity", "Cast"), _identity, reads_shapes=True),
    OpRule(ELEMENTWISE, _elementwise),
]
