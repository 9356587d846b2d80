"""Shape and Size of tracked tensors.

`Shape` output entries are harmless as long as nobody reads the channel count out of them: the Shape
output is recorded as a *shape read* at the channel position. Only rules that know where the count goes
may consume it: Gather / Slice / Squeeze / Unsqueeze / Concat / 1-D Reshape move it to another position of
another shape vector (or drop it), Mul by a positive integer (a constant, or a dimension static for every input) scales it, and a Reshape target or an Expand
shape that puts the count at the axis whose channels it counts ties the two (the pruned model reads the
pruned count at run time: nothing to rewrite). Any other consumer blocks the group. `Size` always depends
on the channel count and blocks. The shape of a shape vector is only its length, so Shape reads it freely.
"""

from __future__ import annotations

from ...graph import attr
from ..context import ShapeRead
from ..rules import OpRule


def _shape(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    rank = ctx.rank(node.input[0])
    if rank is None:
        ctx.block_input(node, 0, ctx.unknown_shape_reason(node.input[0]))
        return
    start = int(attr(node, "start", 0))
    end = int(attr(node, "end", rank))
    start = max(0, start + rank if start < 0 else start)
    end = min(rank, end + rank if end < 0 else end)
    if start <= track.axis < end:
        ctx.shape_reads[node.output[0]] = ShapeRead(track.layout, track.axis - start, node.name)


def _size(node, ctx) -> None:
    ctx.block_tracked_inputs(node, "it reads the number of elements, which includes the channel count")


RULES = [
    OpRule(("Shape",), _shape, reads_shapes=True),  # the shape of a shape vector does not depend on what it holds
    OpRule(("Size",), _size),
]
