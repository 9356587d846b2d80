"""Gemm and MatMul with a constant weight: the weight's K axis reads the input's last-axis channels and
its N axis produces a new space of output features.

Gemm: Y = op(A) @ op(B) + C, with op = transpose where transA / transB is set. MatMul: Y = A @ B, with B a
2-D constant [K, N] (PyTorch's [in, out] layout). MatMul between two activations (attention) keeps a
tracked batch or row axis in place; a tracked contraction axis is blocked.
"""

from __future__ import annotations

from ...graph import attr
from ..rules import OpRule


def _gemm(node, ctx) -> None:
    a, b = node.input[0], node.input[1]
    b_shape = ctx.graph.const_shape(b)
    if b_shape is None or len(b_shape) != 2:
        reason = "its weight B is not 2-D" if b_shape is not None else ctx.not_constant_reason(b, "weight B")
        ctx.block_tracked_inputs(node, reason)
        return
    trans_a, trans_b = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    a_track = ctx.track(a)
    k_axis_of_a = 0 if trans_a else 1
    if a_track is not None:
        if a_track.axis == k_axis_of_a:
            ctx.param(node, 1, 1 if trans_b else 0, a_track.layout, "in")
        else:
            ctx.block_input(node, 0, "its input is tracked on the row axis")
    n = b_shape[0] if trans_b else b_shape[1]
    out = ctx.new_layout(n, node)
    ctx.param(node, 1, 0 if trans_b else 1, out, "out")
    if len(node.input) > 2 and node.input[2]:
        c = node.input[2]
        c_shape = ctx.graph.const_shape(c)
        if c_shape is None:
            ctx.block(out, node, "its bias C is not a constant")
            ctx.block_input(node, 2, "its bias C is an activation")
        elif len(c_shape) >= 1 and c_shape[-1] == n and n > 1:
            ctx.param(node, 2, len(c_shape) - 1, out, "bias")
    ctx.set_track(node.output[0], 1, out)


def _matmul(node, ctx) -> None:
    a, b = node.input[0], node.input[1]
    a_track, b_track = ctx.track(a), ctx.track(b)
    b_shape = ctx.graph.const_shape(b)
    if b_shape is not None:
        if len(b_shape) != 2:
            ctx.block_tracked_inputs(node, "its constant weight is not 2-D")
            return
        rank = ctx.rank(a)
        if rank is None:
            ctx.block_tracked_inputs(node, ctx.unknown_shape_reason(a))
            return
        if a_track is not None and rank is not None and a_track.axis != rank - 1:
            ctx.set_track(node.output[0], a_track.axis, a_track.layout)  # rows and batch axes pass through
            return
        if a_track is not None:
            ctx.param(node, 1, 0, a_track.layout, "in")
        out = ctx.new_layout(b_shape[1], node)
        ctx.param(node, 1, 1, out, "out")
        ctx.set_track(node.output[0], max(rank, 2) - 1, out)
        return
    if ctx.is_constant(a):
        ctx.block_tracked_inputs(node, "its constant is the left operand")
        return
    _activation_matmul(node, ctx, a_track, b_track)


def _activation_matmul(node, ctx, a_track, b_track) -> None:
    ra, rb, ro = ctx.rank(node.input[0]), ctx.rank(node.input[1]), ctx.rank(node.output[0])
    if None in (ra, rb, ro) or min(ra, rb) < 2:
        ctx.block_tracked_inputs(node, "operand ranks are unknown")
        return
    out_axes = []
    for track, rank, index in ((a_track, ra, 0), (b_track, rb, 1)):
        if track is None:
            continue
        contraction = rank - 1 if index == 0 else rank - 2
        if track.axis == contraction:
            ctx.block_input(node, index, "its channels are summed over (contraction axis)")
            continue
        if track.axis >= rank - 2:  # A's rows or B's columns
            out_axes.append((ro - 2 if index == 0 else ro - 1, track))
        else:  # a batch axis, broadcast from the right
            other_rank = rb if index == 0 else ra
            other_track = b_track if index == 0 else a_track
            aligned = track.axis + (ro - rank)
            other_axis = aligned - (ro - other_rank)
            other_dims = ctx.dims(node.input[1 - index]) or ()
            if other_track is None and 0 <= other_axis < other_rank - 2 and (
                other_axis >= len(other_dims) or other_dims[other_axis] != 1
            ):
                ctx.block_input(node, index, "its batch axis meets an untracked operand")
                continue
            out_axes.append((aligned, track))
    if not out_axes:
        return
    axis, track = out_axes[0]
    for other_axis, other in out_axes[1:]:
        if other_axis != axis or not ctx.align(track.layout, other.layout, node, "operands"):
            ctx.block(track.layout, node, "operands are tracked on different axes")
            ctx.block(other.layout, node, "operands are tracked on different axes")
            return
    ctx.set_track(node.output[0], axis, track.layout)


RULES = [OpRule(("Gemm",), _gemm), OpRule(("MatMul",), _matmul)]
