"""Conv and ConvTranspose in 1D, 2D and 3D: plain, grouped and depthwise.

Conv weight is [C_out, C_in / group, k...]; ConvTranspose weight is [C_in, C_out / group, k...].
- group == 1: the weight's input axis reads the input's channels (role "in"), and a new space of C_out
  output channels is produced (weight output axis and bias, roles "out" and "bias").
- group > 1 (depthwise included): channels cannot move between groups, so whole groups are pruned.
  A space G of `group` indices ties input block g (C_in/group channels) to output block g (C_out/group
  channels). Depthwise with multiplier 1 is the case where both blocks have size 1, a pass-through.
  The rewriter sets the `group` attribute to the number of groups kept.
"""

from __future__ import annotations

from ...graph import attr
from ..layout import Seg
from ..rules import OpRule


def _conv(node, ctx, transpose: bool) -> None:
    x, w = node.input[0], node.input[1]
    x_track = ctx.track(x)
    w_shape = ctx.graph.const_shape(w)
    if w_shape is None:
        ctx.block_tracked_inputs(node, ctx.not_constant_reason(w))
        return
    if x_track is not None and x_track.axis != 1:
        ctx.block_input(node, 0, "its input's channel axis is not axis 1")
        x_track = None
    group = int(attr(node, "group", 1))
    if transpose:
        c_in, c_out = w_shape[0], w_shape[1] * group
        in_axis, out_axis = 0, 1
    else:
        c_out, c_in = w_shape[0], w_shape[1] * group
        in_axis, out_axis = 1, 0
    has_bias = len(node.input) > 2 and node.input[2]
    if group == 1:
        if x_track is not None:
            ctx.param(node, 1, in_axis, x_track.layout, "in")
        out = ctx.new_layout(c_out, node)
        ctx.param(node, 1, out_axis, out, "out")
    else:
        groups = ctx.spaces.new(group, origin=node.name)
        out = (Seg(groups, c_out // group),)
        # The weight's group axis: output blocks for Conv, input blocks for ConvTranspose.
        ctx.param(node, 1, 0, (Seg(groups, w_shape[0] // group),), "out")
        if x_track is not None:
            ctx.align(x_track.layout, (Seg(groups, c_in // group),), node, "input and its groups")
        else:
            ctx.block(out, node, "the input of a grouped convolution has channels that cannot be pruned")
        ctx.on_rewrite(node, lambda rw: rw.set_attr(node, "group", rw.new_length((Seg(groups, 1),))))
    if has_bias:
        ctx.param(node, 2, 0, out, "bias")
    ctx.set_track(node.output[0], 1, out)


RULES = [
    OpRule(("Conv",), lambda node, ctx: _conv(node, ctx, transpose=False)),
    OpRule(("ConvTranspose",), lambda node, ctx: _conv(node, ctx, transpose=True)),
]
