"""Pooling over spatial axes and reductions over axes other than the channel axis.

Pools (Max, Average, Lp, Global*) keep axis 1 as it is. MaxPool's optional Indices output encodes flat
positions that include the channel count, so a used Indices output blocks.
Reduce* ops pass the channels through when the channel axis is not reduced, shifting the axis when
earlier axes are dropped (keepdims=0). Reducing over channels (or over all axes: no axes, or an empty
axes list without noop_with_empty_axes) blocks.
"""

from __future__ import annotations

from ...graph import attr
from ..rules import OpRule

POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
REDUCES = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
)


def _pool(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    if track.axis != 1:
        ctx.block_input(node, 0, "its channel axis is not axis 1")
        return
    if len(node.output) > 1 and node.output[1] and node.output[1] in ctx.graph.consumers | dict.fromkeys(
        ctx.graph.output_names
    ):
        ctx.block_input(node, 0, "its Indices output depends on the channel count")
        return
    ctx.set_track(node.output[0], 1, track.layout)


def _reduce(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    rank = ctx.rank(node.input[0])
    if rank is None:
        ctx.block_input(node, 0, ctx.unknown_shape_reason(node.input[0]))
        return
    keepdims = int(attr(node, "keepdims", 1))
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [int(attr(node, "axis", 0))]
    elif len(node.input) > 1 and node.input[1]:
        axes = ctx.graph.int_values(node.input[1])
        if axes is None:
            ctx.block_input(node, 0, "its axes are not constant")
            return
    else:
        axes = attr(node, "axes", None)
    if not axes:  # absent or empty (an empty axes input too): every axis, or none with noop_with_empty_axes
        if int(attr(node, "noop_with_empty_axes", 0)):
            ctx.set_track(node.output[0], track.axis, track.layout)
            return
        axes = list(range(rank))
    axes = sorted({a % rank for a in axes})
    if track.axis in axes:
        ctx.block_input(node, 0, "it reduces over the channel axis")
        return
    new_axis = track.axis if keepdims else track.axis - sum(a < track.axis for a in axes)
    ctx.set_track(node.output[0], new_axis, track.layout)


RULES = [OpRule(POOLS, _pool), OpRule(REDUCES, _reduce)]
