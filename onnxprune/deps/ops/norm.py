"""Normalizations and softmax-like ops.

- BatchNormalization, InstanceNormalization: per-channel statistics on axis 1; their scale, bias, mean and
  variance are sliced with the channels (role "param"). Training-mode BN (extra outputs) is blocked.
- LayerNormalization, Softmax, LogSoftmax, Hardmax, LpNormalization: pass the channels through when they
  normalize over other axes; normalizing over the channel axis mixes channels and blocks.
- GroupNormalization and LRN mix neighbouring channels and have no rule (they block).
"""

from __future__ import annotations

from ...graph import attr
from ..rules import OpRule


def _per_channel_norm(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    if track.axis != 1:
        ctx.block_input(node, 0, "its channel axis is not axis 1")
        return
    if len(node.output) > 1 and any(node.output[1:]):
        ctx.block_input(node, 0, "training-mode outputs are not supported")
        return
    for index in range(1, len(node.input)):
        if not ctx.param(node, index, 0, track.layout, "param"):
            ctx.block(track.layout, node, f"input {index} is not a per-channel constant")
            return
    ctx.set_track(node.output[0], 1, track.layout)


def _normalizes_over(node, ctx, track, rank: int) -> bool:
    op = node.op_type
    if op == "LayerNormalization":
        start = int(attr(node, "axis", -1)) % rank
        return track.axis >= start
    axis = int(attr(node, "axis", -1 if (op != "LpNormalization" and ctx.graph.opset >= 13) else 1)) % rank
    if op in ("Softmax", "LogSoftmax", "Hardmax") and ctx.graph.opset < 13:
        return track.axis >= axis  # opset < 13 flattens the input from `axis` into one axis
    return track.axis == axis


def _axis_normalization(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        ctx.block_tracked_inputs(node, "its scale or bias is an activation")
        return
    rank = ctx.rank(node.input[0])
    if rank is None or _normalizes_over(node, ctx, track, rank):
        ctx.block_input(node, 0, "it normalizes over the channel axis")
        return
    if any(ctx.track(name) is not None for name in node.input[1:]):
        ctx.block_tracked_inputs(node, "its scale or bias is an activation")
        return
    if any(node.output[1:]):
        ctx.block_input(node, 0, "its statistics outputs are used")
        return
    ctx.set_track(node.output[0], track.axis, track.layout)


RULES = [
    OpRule(("BatchNormalization", "InstanceNormalization"), _per_channel_norm),
    OpRule(("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax", "LpNormalization"), _axis_normalization),
]
