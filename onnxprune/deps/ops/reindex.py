"""Ops that move channels to other positions or axes without mixing them.

- Concat on the channel axis: the output layout is the inputs' layouts one after another. An input that
  cannot be pruned (a graph input, a constant) becomes a blocked segment of its size.
- Split / Slice on the channel axis: each output is a part of the input's layout (spaces are cut at the
  boundaries); the rewriter recomputes split sizes and slice bounds from what each part keeps.
- Flatten / Reshape merging the channel axis with the axes after it: channel i owns `inner` consecutive
  positions. Reshape splitting the channel axis into [blocks, block_size] (attention heads) tracks the
  blocks. Reshape targets holding the channel count are rewritten (a target built by a Concat that other
  nodes read too cannot be rewritten for one of them, and blocks).
- Transpose, Squeeze, Unsqueeze, Gather on other axes: the channel axis moves.
- Resize, Upsample, Pad: spatial only; scale 1 / zero padding on the channel axis, Resize sizes rewritten.
Concat, Split, Slice and Gather on other axes pass the channels through.
"""

from __future__ import annotations

from math import prod

from ...graph import attr
from ..layout import Seg
from ..rules import OpRule

INT64_MAX = 2**63 - 1


def _static(dims) -> bool:
    return dims is not None and all(isinstance(d, int) for d in dims)


def _ints(ctx, node, index: int, attr_name: str):
    """An int list given as input `index` (newer opsets) or as attribute `attr_name` (older ones)."""
    if index < len(node.input) and node.input[index]:
        return ctx.graph.int_values(node.input[index])
    value = attr(node, attr_name, None)
    return None if value is None else [int(v) for v in value]


def _set_ints(rw, node, index: int, attr_name: str, values) -> None:
    if (index < len(node.input) and node.input[index]) or attr(node, attr_name, None) is None:
        rw.set_ints(node, index, values)
    else:
        rw.set_attr(node, attr_name, list(values))


# ---- Concat / Split / Slice ----------------------------------------------------------------------------
def _concat(node, ctx) -> None:
    names = [n for n in node.input if n]
    tracks = [ctx.track(n) for n in names]
    if all(t is None for t in tracks):
        return
    rank = ctx.rank(node.output[0]) or next(ctx.rank(n) for n in names if ctx.rank(n) is not None)
    axis = int(attr(node, "axis", 1)) % rank
    if any(t is not None and t.axis == axis for t in tracks):
        pieces = []
        for index, (name, track) in enumerate(zip(names, tracks)):
            if track is not None and track.axis == axis:
                pieces.extend(track.layout)
                continue
            if track is not None:
                ctx.block_input(node, index, "its channel axis is not the Concat axis")
            dims = ctx.dims(name)
            size = dims[axis] if dims is not None and axis < len(dims) else None
            if not isinstance(size, int):
                ctx.block_tracked_inputs(node, f"the size of input '{name}' on the Concat axis is unknown")
                return
            piece = ctx.new_layout(size, node)
            ctx.block(piece, node, f"input '{name}' has channels that cannot be pruned")
            pieces.extend(piece)
        ctx.set_track(node.output[0], axis, tuple(pieces))
        return
    layout = None
    for index, (name, track) in enumerate(zip(names, tracks)):
        if track is None:
            ctx.block_tracked_inputs(node, f"input '{name}' has channels that cannot be pruned")
            return
        if layout is not None and (track.axis != tracks[0].axis or not ctx.align(layout, track.layout, node)):
            ctx.block_tracked_inputs(node, "its inputs carry channels on different axes")
            return
        layout = track.layout
    ctx.set_track(node.output[0], tracks[0].axis, layout)


def _split(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    rank = ctx.rank(node.input[0])
    axis = int(attr(node, "axis", 0)) % rank if rank else None
    outputs = [o for o in node.output]
    if axis != track.axis:
        if axis is None:
            ctx.block_input(node, 0, "the rank of its input is unknown")
            return
        for out in outputs:
            ctx.set_track(out, track.axis, track.layout)
        return
    total = ctx.length(track.layout)
    sizes = _ints(ctx, node, 1, "split")
    if sizes is None:
        if len(node.input) > 1 and node.input[1]:
            ctx.block_input(node, 0, "its split sizes are not constant")
            return
        n = len(outputs)
        chunk = -(-total // n)
        sizes = [min(chunk, total - i * chunk) for i in range(n)]
    parts, start = [], 0
    for size in sizes:
        part = ctx.spaces.sub(track.layout, start, start + size)
        if part is None:
            ctx.block_input(node, 0, "a split boundary falls inside a block of channels")
            return
        parts.append(part)
        start += size
    for out, part in zip(outputs, parts):
        ctx.set_track(out, axis, part)

    def fix(rw):
        new_sizes = [rw.new_length(p) for p in parts]
        if new_sizes == sizes:
            return
        if ctx.graph.opset >= 13:
            rw.remove_attr(node, "num_outputs")
            rw.set_ints(node, 1, new_sizes)
        else:
            rw.set_attr(node, "split", new_sizes)

    ctx.on_rewrite(node, fix)


def _slice(node, ctx) -> None:
    opset10 = ctx.graph.opset >= 10
    starts = _ints(ctx, node, 1, "starts") if opset10 else attr(node, "starts")
    ends = _ints(ctx, node, 2, "ends") if opset10 else attr(node, "ends")
    rank = ctx.rank(node.input[0])
    axes = _ints(ctx, node, 3, "axes") if opset10 else attr(node, "axes")
    steps = _ints(ctx, node, 4, "steps") if opset10 and len(node.input) > 4 and node.input[4] else None
    read = ctx.shape_reads.get(node.input[0])
    track = ctx.track(node.input[0])
    if read is None and track is None:
        return
    if starts is None or ends is None or rank is None or (len(node.input) > 3 and node.input[3] and axes is None):
        ctx.block_tracked_inputs(node, "its bounds are not constant")
        return
    axes = [a % rank for a in (axes if axes is not None else range(len(starts)))]
    steps = steps or [1] * len(axes)
    if read is not None:
        length = ctx.dims(node.input[0])[0]
        lo, hi, step = _normalize(starts[0], ends[0], steps[0], length)
        if step != 1 or lo <= read.position < hi:
            ctx.block(read.layout, node, "reads the channel count")
        elif lo <= read.position:  # a Slice after the channel entry keeps the read out of its output
            pass
        return
    if track.axis not in axes:
        ctx.set_track(node.output[0], track.axis, track.layout)
        return
    k = axes.index(track.axis)
    total = ctx.length(track.layout)
    lo, hi, step = _normalize(starts[k], ends[k], steps[k], total)
    if step != 1:
        ctx.block_input(node, 0, "it slices the channel axis with a step other than 1")
        return
    prefix, part = ctx.spaces.sub(track.layout, 0, lo), ctx.spaces.sub(track.layout, lo, hi)
    if prefix is None or part is None:
        ctx.block_input(node, 0, "a slice boundary falls inside a block of channels")
        return
    ctx.set_track(node.output[0], track.axis, part)

    def fix(rw):
        new_lo = rw.new_length(prefix)
        new_starts, new_ends = list(starts), list(ends)
        new_starts[k], new_ends[k] = new_lo, new_lo + rw.new_length(part)
        if (new_starts, new_ends) != (list(starts), list(ends)):
            _set_ints(rw, node, 1, "starts", new_starts)
            _set_ints(rw, node, 2, "ends", new_ends)

    ctx.on_rewrite(node, fix)


def _normalize(start: int, end: int, step: int, size: int) -> tuple[int, int, int]:
    def clamp(v: int) -> int:
        if v < 0:
            v += size
        return max(0, min(size, v))

    return clamp(start), clamp(min(end, INT64_MAX)), step


# ---- Flatten / Reshape ---------------------------------------------------------------------------------
def _scaled(layout, inner: int):
    return tuple(Seg(seg.space, seg.inner * inner) for seg in layout)


def _flatten(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    dims = ctx.dims(node.input[0])
    if dims is None:
        ctx.block_input(node, 0, "the shape of its input is unknown")
        return
    f = int(attr(node, "axis", 1))
    f = f + len(dims) if f < 0 else f  # axis is in [-r, r]: -1 flattens all axes but the last
    a = track.axis
    if a < f and a == 0 and _static(dims[1:f]):
        ctx.set_track(node.output[0], 0, _scaled(track.layout, prod(dims[1:f])))
    elif a == f and _static(dims[f + 1:]):
        ctx.set_track(node.output[0], 1, _scaled(track.layout, prod(dims[f + 1:])))
    else:
        ctx.block_input(node, 0, "it merges the channel axis with axes before it or with dynamic axes")


def _reshape(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if ctx.track(node.input[1]) is not None:
        ctx.block_input(node, 1, "a shape input carries channels")
    if track is None:
        return
    a, channels = track.axis, ctx.length(track.layout)
    in_dims, out_dims = ctx.dims(node.input[0]), ctx.dims(node.output[0])
    target = _target_entries(ctx, node)
    found = _keep_channel_axis(a, channels, in_dims, target) or _merge_or_split(a, channels, in_dims, out_dims)
    if found is None:
        ctx.block_input(node, 0, "it reshapes the channel axis in a way onnxprune cannot follow")
        return
    b, kind, factor = found
    if kind == "split":
        blocks = ctx.spaces.coarsen(track.layout, factor)
        if blocks is None:
            ctx.block_input(node, 0, "its channels do not split into equal blocks")
            return
        out = (Seg(blocks),)
    else:
        out = _scaled(track.layout, factor)
    entry = target[b] if target is not None and b < len(target) else None
    if entry is None:
        ctx.block_input(node, 0, "its target shape holds the channel count in a computed value")
        return
    value, source = entry
    if not isinstance(value, int):
        ctx.block_input(node, 0, "its target copies an input dimension into the channel position")
        return
    if value == 0 and b != a:
        ctx.block_input(node, 0, "its target copies an input dimension into the channel position")
        return
    if value > 0 and source[0] is not node and _read_elsewhere(ctx, source[0].output[0], node):
        # the entry lives in a Concat whose output another node reads too: rewriting it would change both
        ctx.block_input(node, 0, "its target shape comes from a node whose output other nodes read too")
        return
    ctx.set_track(node.output[0], b, out)
    if value > 0:
        ctx.on_rewrite(node, lambda rw: rw.set_int_entry(source[0], source[1], source[2], rw.new_length(out)))


def _read_elsewhere(ctx, name: str, node) -> bool:
    """Whether tensor `name` is read by a node other than `node`, or is a graph output."""
    return name in ctx.graph.output_names or any(c is not node for c, _ in ctx.graph.consumers.get(name, []))


def _target_entries(ctx, node):
    """Per entry of a Reshape target: (value, (node, input index, position)). The value is an int for
    constants, ("dim", j) for a copy of dimension j of the data (PyTorch's view(x.size(0), -1)), or the
    entry is None when computed otherwise. Follows Concat of 1-D pieces."""
    name = node.input[1]
    values = ctx.graph.int_values(name)
    if values is not None:
        return [(v, (node, 1, i)) for i, v in enumerate(values)]
    producer = ctx.graph.producer.get(name)
    if producer is None or producer.op_type != "Concat":
        return None
    entries = []
    for index, piece in enumerate(producer.input):
        piece_values = _piece_values(ctx, piece)
        if piece_values is not None:
            entries.extend((v, (producer, index, i)) for i, v in enumerate(piece_values))
            continue
        dim = _copied_dim(ctx, piece, node.input[0])
        if dim is not None:
            entries.append((("dim", dim), None))
            continue
        dims = ctx.dims(piece)
        if dims is None or len(dims) != 1 or not isinstance(dims[0], int):
            return None
        entries.extend([None] * dims[0])
    return entries


def _piece_values(ctx, name):
    values = ctx.graph.int_values(name)
    if values is not None:
        return values
    producer = ctx.graph.producer.get(name)
    if producer is not None and producer.op_type == "Unsqueeze" and ctx.graph.is_constant(producer.input[0]):
        return ctx.graph.int_values(producer.input[0])
    return None


INT_CASTS = (6, 7)  # TensorProto.INT32, INT64: a dimension passes through these casts unchanged


def _producer(ctx, name):
    """The node producing `name`, looking through Identity and Casts to int32/int64 (Paddle and some
    PyTorch exports cast shape vectors and their entries)."""
    node = ctx.graph.producer.get(name)
    while node is not None and (
        node.op_type == "Identity" or (node.op_type == "Cast" and int(attr(node, "to", 0)) in INT_CASTS)
    ):
        node = ctx.graph.producer.get(node.input[0])
    return node


def _copied_dim(ctx, piece, data):
    """j when `piece` is the 1-element vector Shape(data)[j] (through Unsqueeze of a Gather, or a Slice;
    Identity and integer Casts between them are looked through)."""
    node = _producer(ctx, piece)
    if node is not None and node.op_type == "Unsqueeze":
        node = _producer(ctx, node.input[0])
        if node is None or node.op_type != "Gather":
            return None
    if node is None or node.op_type not in ("Gather", "Slice"):
        return None
    shape = _producer(ctx, node.input[0])
    if shape is None or shape.op_type != "Shape" or shape.input[0] != data or attr(shape, "start", 0):
        return None
    if node.op_type == "Gather":
        index = ctx.graph.int_values(node.input[1])
        return index[0] if index is not None and len(index) == 1 and index[0] >= 0 else None
    starts, ends = ctx.graph.int_values(node.input[1]), ctx.graph.int_values(node.input[2])
    if starts and ends and len(starts) == 1 and ends[0] == starts[0] + 1 and starts[0] >= 0:
        return starts[0]
    return None


def _keep_channel_axis(a, channels, in_dims, target):
    """Target entries before the channel axis copy the input (0, the same static size, or Shape(x)[j]);
    the entry at the channel axis is the channel count (the axis stays, whatever follows) or a final -1
    (the channel axis absorbs the static axes after it)."""
    if target is None or in_dims is None or len(target) <= a or target[a] is None:
        return None
    for j in range(a):
        entry = target[j]
        if entry is None or not (
            entry[0] == 0 or entry[0] == ("dim", j) or (isinstance(in_dims[j], int) and entry[0] == in_dims[j])
        ):
            return None
    value = target[a][0]
    if value in (channels, 0):
        return a, "merge", 1
    if value == -1 and len(target) == a + 1 and _static(in_dims[a + 1:]):
        return a, "merge", prod(in_dims[a + 1:])
    return None


def _merge_or_split(a, channels, in_dims, out_dims):
    if in_dims is None or out_dims is None or not _static(in_dims[a + 1:]):
        return None
    tail = list(in_dims[a + 1:])
    for b in range(len(out_dims)):
        if not _static(out_dims[b:]):
            continue
        rest = prod(out_dims[b + 1:])
        if out_dims[b] % channels == 0:  # merge with the first k axes after the channel axis
            m = out_dims[b] // channels
            for k in range(len(tail) + 1):
                if prod(tail[:k]) == m and prod(tail[k:]) == rest:
                    return b, "merge", m
    for b in range(len(out_dims)):
        if not _static(out_dims[b:]) or out_dims[b] <= 1 or out_dims[b] >= channels or channels % out_dims[b]:
            continue
        block = channels // out_dims[b]
        for m in range(1, len(out_dims) - b):
            if prod(out_dims[b + 1:b + 1 + m]) == block and prod(out_dims[b + 1 + m:]) == prod(tail):
                return b, "split", out_dims[b]
    return None


# ---- axis moves ----------------------------------------------------------------------------------------
def _transpose(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    rank = ctx.rank(node.input[0])
    perm = attr(node, "perm", None)
    if perm is None:
        if rank is None:
            ctx.block_input(node, 0, "the rank of its input is unknown")
            return
        perm = list(reversed(range(rank)))
    ctx.set_track(node.output[0], list(perm).index(track.axis), track.layout)


def _squeeze(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    dims = ctx.dims(node.input[0])
    axes = _ints(ctx, node, 1, "axes")
    if axes is None:
        if len(node.input) > 1 and node.input[1] or not _static(dims or [None]):
            ctx.block_input(node, 0, "its axes are not known")
            return
        axes = [i for i, d in enumerate(dims) if d == 1]
    rank = ctx.rank(node.input[0])
    axes = [x % rank for x in axes]
    if track.axis in axes:
        ctx.block_input(node, 0, "it squeezes the channel axis")
        return
    ctx.set_track(node.output[0], track.axis - sum(x < track.axis for x in axes), track.layout)


def _unsqueeze(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    axes, rank = _ints(ctx, node, 1, "axes"), ctx.rank(node.input[0])
    if axes is None or rank is None:
        ctx.block_input(node, 0, "its axes are not known")
        return
    out_rank = rank + len(axes)
    inserted = {x % out_rank for x in axes}
    kept = [i for i in range(out_rank) if i not in inserted]
    ctx.set_track(node.output[0], kept[track.axis], track.layout)


def _gather(node, ctx) -> None:
    read = ctx.shape_reads.get(node.input[0])
    if ctx.track(node.input[1]) is not None:
        ctx.block_input(node, 1, "its indices carry channels")
    if read is not None:
        indices = ctx.graph.int_values(node.input[1])
        size = (ctx.dims(node.input[0]) or [None])[0]
        if indices is None or not isinstance(size, int) or read.position in [i % size for i in indices]:
            ctx.block(read.layout, node, "reads the channel count")
        return
    track = ctx.track(node.input[0])
    if track is None:
        return
    rank, index_rank = ctx.rank(node.input[0]), ctx.rank(node.input[1])
    axis = int(attr(node, "axis", 0)) % rank if rank else None
    if axis is None or index_rank is None or axis == track.axis:
        ctx.block_input(node, 0, "it gathers along the channel axis")
        return
    new_axis = track.axis if track.axis < axis else track.axis - 1 + index_rank
    ctx.set_track(node.output[0], new_axis, track.layout)


# ---- spatial resampling and padding -----------------------------------------------------------------
def _resize(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    ctx.block_tracked_inputs(node, "its scales or sizes carry channels", skip=(0,))
    if attr(node, "axes", None) is not None:
        ctx.block_input(node, 0, "its `axes` attribute is not supported")
        return
    old = node.op_type == "Upsample" or ctx.graph.opset < 11
    scales_index = 1 if old else 2
    scales = attr(node, "scales", None) if old and ctx.graph.opset < 9 else None
    if scales is None and scales_index < len(node.input) and node.input[scales_index]:
        scales = ctx.graph.value(node.input[scales_index])
        scales = None if scales is None else [float(s) for s in scales.reshape(-1)]
        if scales == []:
            scales = None
    sizes = _ints(ctx, node, 3, "") if not old and len(node.input) > 3 and node.input[3] else None
    axis, layout = track.axis, track.layout
    if scales is not None:
        if axis >= len(scales) or scales[axis] != 1.0:
            ctx.block_input(node, 0, "it scales the channel axis")
            return
    elif sizes is not None:
        def fix(rw):
            new = list(sizes)
            new[axis] = rw.new_length(layout)
            if new != sizes:
                rw.set_ints(node, 3, new)

        ctx.on_rewrite(node, fix)
    else:
        ctx.block_input(node, 0, "its scales or sizes are computed at run time")
        return
    ctx.set_track(node.output[0], axis, layout)


def _pad(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    ctx.block_tracked_inputs(node, "its pads carry channels", skip=(0,))
    rank = ctx.rank(node.input[0])
    pads = _ints(ctx, node, 1, "pads") if ctx.graph.opset >= 11 else attr(node, "pads")
    axes = _ints(ctx, node, 3, "") if len(node.input) > 3 and node.input[3] else None
    if pads is None or rank is None or (len(node.input) > 3 and node.input[3] and axes is None):
        ctx.block_input(node, 0, "its pads are not constant")
        return
    axes = [x % rank for x in axes] if axes is not None else list(range(rank))
    n = len(axes)
    if track.axis in axes:
        k = axes.index(track.axis)
        if pads[k] != 0 or pads[k + n] != 0:
            ctx.block_input(node, 0, "it pads the channel axis")
            return
    ctx.set_track(node.output[0], track.axis, track.layout)


RULES = [
    OpRule(("Concat",), _concat),
    OpRule(("Split",), _split),
    OpRule(("Slice",), _slice, reads_shapes=True),
    OpRule(("Flatten",), _flatten),
    OpRule(("Reshape",), _reshape),
    OpRule(("Transpose",), _transpose),
    OpRule(("Squeeze",), _squeeze),
    OpRule(("Unsqueeze",), _unsqueeze),
    OpRule(("Gather",), _gather, reads_shapes=True),
    OpRule(("Resize", "Upsample"), _resize),
    OpRule(("Pad",), _pad),
]
