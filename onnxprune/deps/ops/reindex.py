"""Ops that move channels to other positions or axes without mixing them.

- Concat on the channel axis: the output layout is the inputs' layouts one after another. An input that
  cannot be pruned (a graph input, a constant) becomes a blocked segment of its size.
- Split / Slice on the channel axis: each output is a part of the input's layout (spaces are cut at the
  boundaries); the rewriter recomputes split sizes and slice bounds from what each part keeps.
- Flatten / Reshape merging the channel axis with the axes after it: channel i owns `inner` consecutive
  positions; static axes merged in from before it repeat the layout (a bidirectional RNN's [2, H] -> [2*H]).
  Reshape splitting the channel axis into [blocks, block_size] (attention heads) tracks the blocks; a split into [k, heads, head_dim] whose k axis is unbound right after (a fused QKV projection,
  timm's `qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)`) tracks the heads, tying the k parts
  head by head. Reshape targets holding the channel count are rewritten; a target built by a Concat that
  other nodes read too is first copied for the Reshape (dynamo exports share one target between layers).
  A target entry that is the channel count read at run time (Shape -> Gather/Slice -> ... -> Concat) needs
  no rewrite: it is tied to the channels it reads.
- Expand: the channel axis must be expanded to itself (1, the channel count, or its run-time read).
- Transpose, Squeeze, Unsqueeze, Gather on other axes: the channel axis moves.
- Resize, Upsample, Pad: spatial only; scale 1 / zero padding on the channel axis, Resize sizes rewritten.
  Pads and scales computed from the input's size pass where their channel entries are the same for every
  input (known.py: "same" padding as exporters write it); Resize sizes may read the count at run time
  (`F.interpolate(x, size=y.shape[-2:])`).
Concat, Split, Slice and Gather on other axes pass the channels through (Slice bounds on other axes may be
computed at run time).

Shape vectors that hold a channel count (see shape.py) are followed through Gather, Slice, Squeeze,
Unsqueeze, Concat and 1-D Reshape, so that `x.view(-1, x.size(-1))` and HF's `repeat_kv` stay prunable.
"""

from __future__ import annotations

from math import prod

from ...graph import attr
from ..context import ShapeRead
from ..layout import Seg
from ..rules import OpRule
from .known import known_values
from .shapevec import (
    block_target_read, copies_input_dim, filled_dims, int_list, is_count, normalize_slice, rewrite_entry,
    vector_entries, vector_length,
)


def _static(dims) -> bool:
    return dims is not None and all(isinstance(d, int) for d in dims)


def _set_ints(rw, node, index: int, attr_name: str, values) -> None:
    if (index < len(node.input) and node.input[index]) or attr(node, attr_name, None) is None:
        rw.set_ints(node, index, values)
    else:
        rw.set_attr(node, attr_name, list(values))


# ---- Concat / Split / Slice ----------------------------------------------------------------------------
def _concat_reads(node, ctx) -> None:
    """Concat of 1-D shape pieces: a piece holding a channel count lands at its offset in the output."""
    names = [n for n in node.input if n]
    reads = [n for n in names if n in ctx.shape_reads]
    lengths = [vector_length(ctx, n) for n in names]
    if len(reads) > 1 or None in lengths or ctx.rank(node.output[0]) != 1:
        for i, name in enumerate(node.input):
            if name in ctx.shape_reads:
                ctx.block_input(node, i, "computes with a shape that holds a channel count")
        return
    offset = sum(lengths[:names.index(reads[0])])
    read = ctx.shape_reads[reads[0]]
    ctx.shape_reads[node.output[0]] = ShapeRead(read.layout, offset + read.position, node.name)


def _concat(node, ctx) -> None:
    names = [n for n in node.input if n]
    if any(n in ctx.shape_reads for n in names):
        _concat_reads(node, ctx)
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
            ctx.block(piece, node, ctx.untracked_reason(name, f"input '{name}'"))
            pieces.extend(piece)
        ctx.set_track(node.output[0], axis, tuple(pieces))
        return
    layout = None
    for index, (name, track) in enumerate(zip(names, tracks)):
        if track is None:
            ctx.block_tracked_inputs(node, ctx.untracked_reason(name, f"input '{name}'"))
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
            ctx.block_input(node, 0, ctx.unknown_shape_reason(node.input[0]))
            return
        for out in outputs:
            ctx.set_track(out, track.axis, track.layout)
        return
    total = ctx.length(track.layout)
    sizes = int_list(ctx, node, 1, "split")
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
    starts = int_list(ctx, node, 1, "starts") if opset10 else attr(node, "starts")
    ends = int_list(ctx, node, 2, "ends") if opset10 else attr(node, "ends")
    rank = ctx.rank(node.input[0])
    axes = int_list(ctx, node, 3, "axes") if opset10 else attr(node, "axes")
    steps = int_list(ctx, node, 4, "steps") if opset10 and len(node.input) > 4 and node.input[4] else None
    read = ctx.shape_reads.get(node.input[0])
    track = ctx.track(node.input[0])
    ctx.block_tracked_inputs(node, "its bounds or axes carry channels", skip=(0,))
    if read is None and track is None:
        return
    has_axes = opset10 and len(node.input) > 3 and node.input[3]
    if axes is None and not has_axes:  # default axes: one per start (their number is static even if computed)
        n = len(starts) if starts is not None else (vector_length(ctx, node.input[1]) if opset10 else None)
        axes = list(range(n)) if n is not None else None
    if axes is None or rank is None:
        ctx.block_tracked_inputs(node, "its axes are not constant")
        return
    axes = [a % rank for a in axes]
    if track is not None and track.axis not in axes:  # bounds on other axes may be computed at run time
        ctx.set_track(node.output[0], track.axis, track.layout)
        return
    if starts is None or ends is None:
        ctx.block_tracked_inputs(node, "its bounds are not constant")
        return
    steps = steps or [1] * len(axes)
    if read is not None:
        length = (ctx.dims(node.input[0]) or [None])[0]
        if not isinstance(length, int):
            ctx.block(read.layout, node, "reads the channel count from a shape of unknown length")
            return
        lo, hi, step = normalize_slice(starts[0], ends[0], steps[0], length)
        if step != 1:
            ctx.block(read.layout, node, "reads the channel count")
        elif lo <= read.position < hi:  # the entry moves to its place in the slice
            ctx.shape_reads[node.output[0]] = ShapeRead(read.layout, read.position - lo, node.name)
        return
    k = axes.index(track.axis)
    total = ctx.length(track.layout)
    lo, hi, step = normalize_slice(starts[k], ends[k], steps[k], total)
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


# ---- Flatten / Reshape ---------------------------------------------------------------------------------
def _scaled(layout, inner: int):
    return tuple(Seg(seg.space, seg.inner * inner) for seg in layout)


def _flatten(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    dims = ctx.dims(node.input[0])
    if dims is None:
        ctx.block_input(node, 0, ctx.unknown_shape_reason(node.input[0]))
        return
    f = int(attr(node, "axis", 1))
    f = f + len(dims) if f < 0 else f  # axis is in [-r, r]: -1 flattens all axes but the last
    a = track.axis
    if a < f and a == 0 and _static(dims[1:f]):
        ctx.set_track(node.output[0], 0, _scaled(track.layout, prod(dims[1:f])))
    elif a >= f and _static(dims[f:a]) and _static(dims[a + 1:]):  # static axes before it repeat the layout
        ctx.set_track(node.output[0], 1, _scaled(track.layout, prod(dims[a + 1:])) * prod(dims[f:a]))
    else:
        ctx.block_input(node, 0, "it merges the channel axis with dynamic axes before it or after it")


def _reshape(node, ctx) -> None:
    if ctx.track(node.input[1]) is not None:
        ctx.block_input(node, 1, "a shape input carries channels")
    if node.input[0] in ctx.shape_reads:
        _reshape_read(node, ctx)
    track = ctx.track(node.input[0])
    if track is None:
        block_target_read(ctx, node, 1, None, "sets an axis of its output to a channel count")
        return
    a, channels = track.axis, ctx.length(track.layout)
    in_dims, out_dims = filled_dims(ctx, node.input[0]), ctx.dims(node.output[0])
    target = vector_entries(ctx, node, 1)
    found = (
        _keep_channel_axis(ctx, node, a, channels, in_dims, target)
        or _merge_or_split(a, channels, in_dims, out_dims)
        or _split_last_axis(ctx, node, a, channels, in_dims, target)
        or _merge_outer(ctx, node, a, channels, in_dims, target)
    )
    if found is None:
        ctx.block_input(node, 0, "it reshapes the channel axis in a way onnxprune cannot follow")
        block_target_read(ctx, node, 1, None, "sets an axis of its output to a channel count")
        return
    b, kind, factor, inner = found
    if kind == "split":
        heads = inner[0] if len(inner) >= 2 else None
        if heads is not None and _unbound(ctx, node.output[0], b):
            out, b = _split_parts_into_heads(ctx, node, track.layout, factor, heads), b + 1
        else:
            blocks = ctx.spaces.coarsen(track.layout, factor)
            out = None if blocks is None else (Seg(blocks),)
        if out is None:
            ctx.block_input(node, 0, "its channels do not split into equal blocks")
            return
    elif kind == "outer":
        out = track.layout * factor
    else:
        out = _scaled(track.layout, factor)
    block_target_read(ctx, node, 1, b, "sets another axis of its output to a channel count")
    entry = target[b] if target is not None and b < len(target) else None
    if entry is None:
        ctx.block_input(node, 0, "its target shape holds the channel count in a computed value")
        return
    value, source = entry[0], entry[1]
    if is_count(value):
        if kind == "split":
            ctx.block_input(node, 0, "its target reads a channel count into a split of the channel axis")
            ctx.block(value[1], node, "read into a split of another channel axis")
            return
        if kind == "outer" and ctx.length(value[1]) == ctx.length(out) and set(ctx.spaces.leaves(value[1])) <= set(
                ctx.spaces.leaves(out)):  # the count times the static axes it merges, read at run time
            ctx.set_track(node.output[0], b, out)
            return
        if ctx.align(out, value[1], node, "target's run-time channel count"):
            ctx.set_track(node.output[0], b, out)  # the count is read at run time: no rewrite
        return
    if not isinstance(value, int):
        ctx.block_input(node, 0, "its target copies an input dimension into the channel position")
        return
    if value == 0 and b != a:
        ctx.block_input(node, 0, "its target copies an input dimension into the channel position")
        return
    if value > 0 and source is None:
        ctx.block_input(node, 0, "its target shape holds the channel count in a computed value")
        return
    ctx.set_track(node.output[0], b, out)
    if value > 0:
        ctx.on_rewrite(node, lambda rw: rewrite_entry(rw, node, 1, source, value, rw.new_length(out)))


def _reshape_read(node, ctx) -> None:
    """Reshape of a shape vector to 1-D ([-1] or [n]) keeps the positions of its entries."""
    read = ctx.shape_reads[node.input[0]]
    if ctx.rank(node.input[0]) in (0, 1) and ctx.rank(node.output[0]) == 1:
        ctx.shape_reads[node.output[0]] = ShapeRead(read.layout, read.position, node.name)
    else:
        ctx.block(read.layout, node, "reshapes a shape that holds a channel count")


def _split_parts_into_heads(ctx, node, layout, parts: int, heads: int):
    """[k * heads * head_dim] -> [k, heads, head_dim] with the k axis unbound right after: part i's head h is
    tied to every other part's head h (Q, K and V heads go together). None where the sizes do not divide."""
    total = ctx.length(layout)
    if total % parts or (total // parts) % heads:
        return None
    size = total // parts
    spaces = []
    for i in range(parts):
        part = ctx.spaces.sub(layout, i * size, (i + 1) * size)
        space = None if part is None else ctx.spaces.coarsen(part, heads)
        if space is None:
            return None
        spaces.append(space)
    for space in spaces[1:]:
        if not ctx.align((Seg(spaces[0]),), (Seg(space),), node, "parts (their heads are tied)"):
            return None
    return (Seg(spaces[0]),)


def _unbound(ctx, name: str, axis: int) -> bool:
    """Whether every reader of `name` takes axis `axis` apart into single slices and drops it (Transposes
    on the way; Gather of one index, or Split / Slice into pieces of 1 each followed by Squeeze of that axis)."""
    consumers = ctx.graph.consumers.get(name, [])
    if not consumers or name in ctx.graph.output_names:
        return False
    rank = ctx.rank(name)
    for node, slot in consumers:
        if slot != 0 or rank is None:
            return False
        op = node.op_type
        if op == "Transpose":
            perm = attr(node, "perm", None)
            if perm is None or not _unbound(ctx, node.output[0], list(perm).index(axis)):
                return False
        elif op == "Gather":
            index = ctx.graph.value(node.input[1])
            if index is None or index.ndim != 0 or int(attr(node, "axis", 0)) % rank != axis:
                return False
        elif op in ("Split", "Slice"):
            if op == "Split" and int(attr(node, "axis", 0)) % rank != axis:
                return False
            if op == "Slice":
                axes = int_list(ctx, node, 3, "axes") if ctx.graph.opset >= 10 else attr(node, "axes", None)
                if axes is None or [x % rank for x in axes] != [axis]:
                    return False
            for out in node.output:
                if not _squeezed_single(ctx, out, axis, rank):
                    return False
        else:
            return False
    return True


def _squeezed_single(ctx, name: str, axis: int, rank: int) -> bool:
    dims = ctx.dims(name)
    if dims is None or len(dims) != rank or dims[axis] != 1 or name in ctx.graph.output_names:
        return False
    consumers = ctx.graph.consumers.get(name, [])
    for node, slot in consumers:
        axes = int_list(ctx, node, 1, "axes") if node.op_type == "Squeeze" else None
        if slot != 0 or axes is None or [x % rank for x in axes] != [axis]:
            return False
    return bool(consumers)


def _keep_channel_axis(ctx, node, a, channels, in_dims, target):
    """Target entries before the channel axis keep the input's dimensions (see `copies_input_dim`); the
    entry at the channel axis is the channel count (the axis stays, whatever follows), the count times the
    static size of the next axes (it absorbs them: HF's repeat_kv merges KV heads with their copies), or a
    final -1 (the channel axis absorbs the static axes after it)."""
    if target is None or in_dims is None or len(target) <= a or target[a] is None:
        return None
    if not all(copies_input_dim(ctx, target[j], j, node.input[0], in_dims) for j in range(a)):
        return None
    value = target[a][0]
    if is_count(value):
        value = ctx.length(value[1])
    if not isinstance(value, int):
        return None
    if value in (channels, 0):
        return a, "merge", 1, ()
    if value == -1 and len(target) == a + 1 and _static(in_dims[a + 1:]):
        return a, "merge", prod(in_dims[a + 1:]), ()
    if value > channels and value % channels == 0:
        m = value // channels
        for k in range(1, len(in_dims) - a):
            if not _static(in_dims[a + 1:a + 1 + k]) or prod(in_dims[a + 1:a + 1 + k]) > m:
                break
            if prod(in_dims[a + 1:a + 1 + k]) == m:
                return a, "merge", m, ()
    return None


def _merge_or_split(a, channels, in_dims, out_dims):
    """(output axis, "merge" or "split", inner size or number of blocks, sizes of the split axes after it)."""
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
                    return b, "merge", m, ()
    for b in range(len(out_dims)):
        if not _static(out_dims[b:]) or out_dims[b] <= 1 or out_dims[b] >= channels or channels % out_dims[b]:
            continue
        block = channels // out_dims[b]
        for m in range(1, len(out_dims) - b):
            if prod(out_dims[b + 1:b + 1 + m]) == block and prod(out_dims[b + 1 + m:]) == prod(tail):
                return b, "split", out_dims[b], tuple(out_dims[b + 1:b + 1 + m])
    return None


def _merge_outer(ctx, node, a, channels, in_dims, target):
    """The channel axis is the data's last axis and the target's last entry merges it with the static axes before
    it, keeping the axes before those (see `copies_input_dim`): a bidirectional RNN's [seq, batch, 2, H] ->
    [seq, batch, 2*H] holds the channels once per direction, so the output's layout repeats the input's."""
    if target is None or in_dims is None or a != len(in_dims) - 1 or not 0 < len(target) <= a:
        return None
    b = len(target) - 1
    value = target[b][0] if target[b] is not None else None
    if is_count(value):
        value = ctx.length(value[1])
    if value == -1:  # the axes before keep their sizes: the last entry absorbs exactly the axes from b on
        if not _static(in_dims[b:a]) or not all(copies_input_dim(ctx, target[j], j, node.input[0], in_dims)
                                                for j in range(b)):
            return None
        return b, "outer", prod(in_dims[b:a]), ()
    if not isinstance(value, int) or value <= channels or value % channels:
        return None
    repeat = value // channels  # the last entry is exactly the last axes' size: whatever the entries before it
    if not any(_static(in_dims[k:a]) and prod(in_dims[k:a]) == repeat for k in range(a)):
        return None
    return b, "outer", repeat, ()


def _split_last_axis(ctx, node, a, channels, in_dims, target):
    """The channel axis is the data's last axis and the target keeps the axes before it (see
    `copies_input_dim`), then splits it into static sizes (one of them may be -1): [B, S, -1, D] with
    dynamic B and S, where shape inference cannot tell the output's sizes."""
    if target is None or in_dims is None or a != len(in_dims) - 1 or len(target) < a + 2:
        return None
    if not all(copies_input_dim(ctx, target[j], j, node.input[0], in_dims) for j in range(a)):
        return None
    sizes = [e[0] if e is not None else None for e in target[a:]]
    if not all(isinstance(v, int) and (v > 0 or v == -1) for v in sizes) or sizes.count(-1) > 1:
        return None
    known = prod(v for v in sizes if v != -1)
    if channels % known:
        return None
    sizes = [channels // known if v == -1 else v for v in sizes]
    if prod(sizes) != channels or sizes[0] <= 1 or sizes[0] >= channels:
        return None
    return a, "split", sizes[0], tuple(sizes[1:])


# ---- axis moves ----------------------------------------------------------------------------------------
def _transpose(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    rank = ctx.rank(node.input[0])
    perm = attr(node, "perm", None)
    if perm is None:
        if rank is None:
            ctx.block_input(node, 0, ctx.unknown_shape_reason(node.input[0]))
            return
        perm = list(reversed(range(rank)))
    ctx.set_track(node.output[0], list(perm).index(track.axis), track.layout)


def _read_to_rank(node, ctx, rank: int) -> None:
    """Squeeze / Unsqueeze of a shape vector between a 1-element vector and a scalar keeps its one entry."""
    read = ctx.shape_reads[node.input[0]]
    ranks = (ctx.rank(node.input[0]), ctx.rank(node.output[0]))
    if ranks in ((1, 0), (0, 1)) and ranks[1] == rank:
        ctx.shape_reads[node.output[0]] = ShapeRead(read.layout, 0, node.name)
    else:
        ctx.block(read.layout, node, "reshapes a shape that holds a channel count")


def _squeeze(node, ctx) -> None:
    if node.input[0] in ctx.shape_reads:
        _read_to_rank(node, ctx, 0)
    track = ctx.track(node.input[0])
    if track is None:
        return
    dims = ctx.dims(node.input[0])
    axes = int_list(ctx, node, 1, "axes")
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
    if node.input[0] in ctx.shape_reads:
        _read_to_rank(node, ctx, 1)
    track = ctx.track(node.input[0])
    if track is None:
        return
    axes, rank = int_list(ctx, node, 1, "axes"), ctx.rank(node.input[0])
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
    if node.input[1] in ctx.shape_reads:
        ctx.block_input(node, 1, "its indices hold a channel count")
    if read is not None:  # a shape vector: the channel count lands where the indices pick it
        indices = ctx.graph.value(node.input[1])
        size = (ctx.dims(node.input[0]) or [None])[0]
        if indices is None or indices.ndim > 1 or not isinstance(size, int) or ctx.rank(node.input[0]) != 1:
            ctx.block(read.layout, node, "reads the channel count")
            return
        picked = indices.reshape(-1).tolist()
        hits = [k for k, i in enumerate(picked) if -size <= i < size and i % size == read.position]
        if len(hits) > 1:
            ctx.block(read.layout, node, "reads the channel count twice")
        elif hits:
            ctx.shape_reads[node.output[0]] = ShapeRead(read.layout, hits[0], node.name)
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


def _expand(node, ctx) -> None:
    """Expand broadcasts to a shape: the channel axis must stay itself (shape entry 1, the channel count, or
    the count read at run time)."""
    if ctx.track(node.input[1]) is not None:
        ctx.block_input(node, 1, "its shape input carries channels")
    track = ctx.track(node.input[0])
    if track is None:
        block_target_read(ctx, node, 1, None, "expands an axis to a channel count")
        return
    rank, n = ctx.rank(node.input[0]), vector_length(ctx, node.input[1])
    if rank is None or n is None:
        ctx.block_input(node, 0, "the rank of its output is unknown")
        block_target_read(ctx, node, 1, None, "expands an axis to a channel count")
        return
    out_rank = max(rank, n)
    axis = track.axis + out_rank - rank
    position = axis - (out_rank - n)
    block_target_read(ctx, node, 1, position, "expands another axis to a channel count")
    if position >= 0 and not _keeps_channel_count(ctx, node, 1, position, track, "shape", broadcast=True):
        return
    ctx.set_track(node.output[0], axis, track.layout)


def _keeps_channel_count(ctx, node, slot: int, position: int, track, what: str, broadcast: bool) -> bool:
    """Whether entry `position` of the int vector at input `slot` keeps the channel count of `track`: the count
    read at run time (tied to the channels it counts), a constant equal to it (rewritten to the kept count), or
    1 where `broadcast`. Otherwise the group is blocked."""
    entries = vector_entries(ctx, node, slot)
    entry = entries[position] if entries is not None and position < len(entries) else None
    if entry is None:
        ctx.block_input(node, 0, f"its {what} sets the channel axis to a computed value")
        return False
    value, source, channels = entry[0], entry[1], ctx.length(track.layout)
    if is_count(value):
        return ctx.align(track.layout, value[1], node, f"{what}'s run-time channel count")
    if value == channels and channels > 1 and source is not None:
        layout = track.layout
        ctx.on_rewrite(node, lambda rw: rewrite_entry(rw, node, slot, source, value, rw.new_length(layout)))
        return True
    if broadcast and value == 1:
        return True
    ctx.block_input(node, 0, f"its {what} sets the channel axis to a value other than the channel count")
    return False


# ---- spatial resampling and padding -----------------------------------------------------------------
def _resize(node, ctx) -> None:
    """Resize / Upsample: scale 1 on the channel axis, or a sizes entry that keeps the channel count (the count read
    at run time, `F.interpolate(x, size=y.shape[-2:])`; or a constant, rewritten)."""
    old = node.op_type == "Upsample" or ctx.graph.opset < 11
    scales_index = 1 if old else 2
    sizes_index = None if old or len(node.input) <= 3 or not node.input[3] else 3
    reads_sizes = sizes_index is not None and node.input[sizes_index] in ctx.shape_reads
    ctx.block_tracked_inputs(node, "its scales or sizes carry channels", skip=(0, 3) if reads_sizes else (0,))
    track = ctx.track(node.input[0])
    if track is None:
        if reads_sizes:
            block_target_read(ctx, node, 3, None, "resizes an axis to a channel count")
        return
    if attr(node, "axes", None) is not None:
        ctx.block_input(node, 0, "its `axes` attribute is not supported")
        return
    axis = track.axis
    if reads_sizes:
        block_target_read(ctx, node, 3, axis, "resizes another axis to a channel count")
    scales = attr(node, "scales", None) if old and ctx.graph.opset < 9 else None
    if scales is None and scales_index < len(node.input) and node.input[scales_index]:
        scales = _channel_scale(ctx, node.input[scales_index], axis)
    if scales is not None:
        if scales == "computed":
            ctx.block_input(node, 0, "its scales are computed at run time and may scale the channel axis")
            return
        if axis >= len(scales) or scales[axis] != 1.0:
            ctx.block_input(node, 0, "it scales the channel axis")
            return
    elif sizes_index is None:
        ctx.block_input(node, 0, "it has neither scales nor sizes")
        return
    elif not _keeps_channel_count(ctx, node, sizes_index, axis, track, "sizes", broadcast=False):
        return
    ctx.set_track(node.output[0], axis, track.layout)


def _channel_scale(ctx, name: str, axis: int):
    """Resize scales as a list (None where given empty: sizes are used), or "computed" where the channel entry is
    not the same for every input (known.py); entries not known are NaN."""
    got = known_values(ctx, name)
    if got is None:
        return "computed"
    values, known = got[0].reshape(-1), got[1].reshape(-1)
    if values.size == 0:
        return None
    if axis < values.size and not known[axis]:
        return "computed"
    return [float(v) if k else float("nan") for v, k in zip(values, known)]


def _pad(node, ctx) -> None:
    track = ctx.track(node.input[0])
    if track is None:
        return
    ctx.block_tracked_inputs(node, "its pads carry channels", skip=(0,))
    rank = ctx.rank(node.input[0])
    axes = int_list(ctx, node, 3, "") if len(node.input) > 3 and node.input[3] else None
    if rank is None or (len(node.input) > 3 and node.input[3] and axes is None):
        ctx.block_input(node, 0, "its pads are not constant" if rank is not None else ctx.unknown_shape_reason(node.input[0]))
        return
    axes = [x % rank for x in axes] if axes is not None else list(range(rank))
    n = len(axes)
    if track.axis in axes:
        k = axes.index(track.axis)
        pads = _channel_pads(ctx, node, k, n)
        if pads is None:
            ctx.block_input(node, 0, "its pads are computed at run time and may pad the channel axis")
            return
        if pads != (0, 0):
            ctx.block_input(node, 0, "it pads the channel axis")
            return
    ctx.set_track(node.output[0], track.axis, track.layout)


def _channel_pads(ctx, node, k: int, n: int):
    """The (begin, end) pads of axis entry k, where they are the same for every input: constant, or computed
    from the input's size with that entry known (see known.py); None otherwise."""
    if ctx.graph.opset < 11:
        pads = attr(node, "pads")
        return pads[k], pads[k + n]
    got = known_values(ctx, node.input[1])
    if got is None or got[0].shape != (2 * n,) or not (got[1][k] and got[1][k + n]):
        return None
    return int(got[0][k]), int(got[0][k + n])


RULES = [
    OpRule(("Concat",), _concat, reads_shapes=True),
    OpRule(("Split",), _split),
    OpRule(("Slice",), _slice, reads_shapes=True),
    OpRule(("Flatten",), _flatten),
    OpRule(("Reshape",), _reshape, reads_shapes=True),
    OpRule(("Expand",), _expand, reads_shapes=True),
    OpRule(("Transpose",), _transpose),
    OpRule(("Squeeze",), _squeeze, reads_shapes=True),
    OpRule(("Unsqueeze",), _unsqueeze, reads_shapes=True),
    OpRule(("Gather",), _gather, reads_shapes=True),
    OpRule(("Resize", "Upsample"), _resize, reads_shapes=True),
    OpRule(("Pad",), _pad),
]
