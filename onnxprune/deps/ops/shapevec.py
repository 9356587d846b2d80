"""Shape vectors: the int vectors that Reshape targets and Expand shapes are made of, entry by entry.

Exporters build them from constants and from the dimensions of other tensors:
`Concat(Shape(x)[0:1], Shape(x)[1:2], [H], [D])` (TorchScript: `x.view(x.size()[:-1] + (H, D))`), the same
with `Shape(x, start, end)` pieces shared by every layer (dynamo), `Where(Equal(s, -1), 1, s)` around an
`expand` shape (TorchScript). `vector_entries` tells for each entry whether it is a constant (and where it
lives, so that a rule can rewrite it), a copy of a dimension of some tensor, or a channel count read at run
time (a shape read, see shape.py), and `_same_dim` whether two dimensions are equal at run time.

Rewriting an entry never changes what other readers of a shared vector see: `rewrite_entry` gives the
reader its own copy of a Concat that other nodes read too.
"""

from __future__ import annotations

import numpy as np

from ...graph import attr
from .elementwise import fill_value

INT64_MAX = 2**63 - 1


def int_list(ctx, node, index: int, attr_name: str):
    """An int list given as input `index` (newer opsets) or as attribute `attr_name` (older ones)."""
    if index < len(node.input) and node.input[index]:
        return ctx.graph.int_values(node.input[index])
    value = attr(node, attr_name, None)
    return None if value is None else [int(v) for v in value]


def vector_length(ctx, name):
    """The static length of a 1-D tensor (a scalar counts as None)."""
    dims = ctx.dims(name)
    return dims[0] if dims is not None and len(dims) == 1 and isinstance(dims[0], int) else None


def normalize_slice(start: int, end: int, step: int, size: int) -> tuple[int, int, int]:
    def clamp(v: int) -> int:
        if v < 0:
            v += size
        return max(0, min(size, v))

    return clamp(start), clamp(min(end, INT64_MAX)), step


def block_target_read(ctx, node, slot: int, used, reason: str) -> None:
    """A shape input holding a channel count at a position the rule does not use (`used`) blocks it."""
    read = ctx.shape_reads.get(node.input[slot]) if slot < len(node.input) else None
    if read is not None and read.position != used:
        ctx.block(read.layout, node, reason)


def is_count(value) -> bool:
    return isinstance(value, tuple) and value[0] == "count"


def rewrite_entry(rw, reader, slot: int, source, old: int, new: int) -> None:
    """Set one entry of the shape vector that `reader` reads at input `slot` from `old` to `new`. `source`
    is (node, input index, position): the reader itself (a constant shape), or the Concat that builds the
    vector (position None: the whole 1-element piece, computed in the dense model, becomes a constant).
    A Concat that other nodes read too is copied for the reader first, so that they keep their shape."""
    if old == new:
        return
    holder, index, position = source
    if holder is not reader:
        holder = rw.own_producer(reader, slot, holder)
    if position is None:
        rw.set_ints(holder, index, [new])
    else:
        rw.set_int_entry(holder, index, position, new)


def vector_entries(ctx, holder, slot: int):
    """Per entry of the int vector that `holder` reads at input `slot` (a Reshape target, an Expand shape):
    (value, source[, dim]), or None where unknown. The value is an int (a constant, or a dimension that
    shape inference knows statically), ("dim", tensor, j) for a run-time copy of dimension j of `tensor`,
    or ("count", layout) for a channel count read at run time. `source` says where an int entry lives (see
    `rewrite_entry`); `dim` is (tensor, j) for a copy of a dimension. Follows Concat of 1-D pieces. None
    when not even the length is known."""
    name = holder.input[slot]
    values = ctx.graph.int_values(name)
    if values is not None:
        return [(v, (holder, slot, i)) for i, v in enumerate(values)]
    return _entries_of(ctx, name, direct=True)


def _entries_of(ctx, name: str, direct: bool, depth: int = 0):
    """Entries of a computed vector. `direct`: `name` is the reader's own input, so the entries of a Concat
    that builds it can be rewritten; behind other nodes they cannot (their source is None)."""
    producer = ctx.graph.producer.get(name)
    if producer is None or depth > 8:
        return _computed_entries(ctx, name)
    op = producer.op_type
    if op == "Concat":
        entries = []
        for index, piece in enumerate(producer.input):
            got = _piece_entries(ctx, producer, index, piece)
            if got is None:
                return None
            entries.extend(got)
        return entries if direct else [None if e is None else (e[0], None, *e[2:]) for e in entries]
    if op == "Reshape" and ctx.rank(producer.input[0]) == 1 and ctx.rank(name) == 1:
        return _entries_of(ctx, producer.input[0], False, depth + 1)
    if op in ("Identity", "Cast") and (op == "Identity" or int(attr(producer, "to", 0)) in INT_CASTS):
        return _entries_of(ctx, producer.input[0], False, depth + 1)
    if op == "Where" and _is_expand_guard(ctx, producer):
        # TorchScript's expand guard Where(Equal(s, -1...), 1..., s): entries equal to the fill become 1
        fill = _fill(ctx, producer.input[1])
        inner = _entries_of(ctx, producer.input[2], False, depth + 1)
        negative = _fill(ctx, _other_input(ctx.graph.producer[producer.input[0]], producer.input[2]))
        if inner is None:
            return _computed_entries(ctx, name)
        return [
            ((fill, None) if fill is not None else None) if e is not None and e[0] == negative else e for e in inner
        ]
    return _computed_entries(ctx, name)


def _other_input(node, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def _fill(ctx, name: str):
    value = fill_value(ctx, name)
    return int(value) if value is not None and float(value).is_integer() else None


def _is_expand_guard(ctx, where) -> bool:
    """Where(Equal(s, m), y, s) with m a negative constant fill: TorchScript's `expand` with -1 entries."""
    cond = ctx.graph.producer.get(where.input[0])
    if cond is None or cond.op_type != "Equal" or where.input[2] not in cond.input:
        return False
    fill = _fill(ctx, _other_input(cond, where.input[2]))
    return fill is not None and fill < 0


def _piece_entries(ctx, concat, index: int, piece: str):
    values = _piece_values(ctx, piece)
    if values is not None:
        return [(v, (concat, index, i)) for i, v in enumerate(values)]
    entries = _computed_entries(ctx, piece)
    dims = _dim_source(ctx, piece)
    if entries is None or dims is None or len(dims[1]) != len(entries):
        return entries
    tensor, js = dims
    for i, j in enumerate(js):
        if entries[i] is not None:  # the channel count, read at run time
            continue
        size = _dim_of(ctx, tensor, j)
        if isinstance(size, int):  # known statically: a 1-element piece may be replaced by a constant
            entries[i] = (size, (concat, index, None) if len(js) == 1 else None, (tensor, j))
        else:
            entries[i] = (("dim", tensor, j), None, (tensor, j))
    return entries


def _computed_entries(ctx, name: str):
    """A computed vector: unknown entries, except the channel count it holds (if any)."""
    n = vector_length(ctx, name)
    if n is None:
        return None
    entries = [None] * n
    read = ctx.shape_reads.get(name)
    if read is not None and 0 <= read.position < n:
        entries[read.position] = (("count", read.layout), None)
    return entries


def _dim_of(ctx, tensor: str, j: int):
    dims = ctx.dims(tensor)
    return dims[j] if dims is not None and 0 <= j < len(dims) else None


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


def _dim_source(ctx, piece):
    """(tensor, [j, ...]) when the 1-D vector `piece` is dimensions j, ... of `tensor`: Shape(tensor) (with
    start / end), a Gather of one index or a Slice of it (through Squeeze + Unsqueeze of one entry).
    Identity and integer Casts between them are looked through."""
    node = _producer(ctx, piece)
    if node is not None and node.op_type == "Unsqueeze":
        node = _producer(ctx, node.input[0])
        if node is not None and node.op_type == "Squeeze":
            node = _producer(ctx, node.input[0])
    if node is None:
        return None
    if node.op_type == "Shape":
        return _shape_entries(ctx, node, 0, INT64_MAX)
    if node.op_type not in ("Gather", "Slice"):
        return None
    shape = _producer(ctx, node.input[0])
    if shape is None or shape.op_type != "Shape":
        return None
    if node.op_type == "Gather":
        index = ctx.graph.int_values(node.input[1])
        if index is None or len(index) != 1:
            return None
        i = index[0]
        return _shape_entries(ctx, shape, i, i + 1 if i != -1 else INT64_MAX)
    starts, ends = ctx.graph.int_values(node.input[1]), ctx.graph.int_values(node.input[2])
    axes = ctx.graph.int_values(node.input[3]) if len(node.input) > 3 and node.input[3] else [0]
    steps = ctx.graph.int_values(node.input[4]) if len(node.input) > 4 and node.input[4] else [1]
    if not (starts and ends and len(starts) == 1 and axes in ([0], [-1]) and steps == [1]):
        return None
    return _shape_entries(ctx, shape, starts[0], ends[0])


def static_dims(ctx, piece):
    """The values of the 1-D vector `piece` where it holds dimensions of a tensor (see `_dim_source`) that are the
    same for every input: static in the inference of the model with no shape pinned (a bidirectional RNN's
    direction axis, 2). None where any is not."""
    source = _dim_source(ctx, piece)
    if source is None:
        return None
    tensor, js = source
    dims = ctx.graph.unpinned_symbolic_shapes.dims(tensor)
    if dims is None or not all(0 <= j < len(dims) and isinstance(dims[j], int) and dims[j] >= 0 for j in js):
        return None
    return np.asarray([dims[j] for j in js], dtype=np.int64)


def _shape_entries(ctx, shape, first: int, stop: int):
    """(tensor, [j, ...]): the dimensions entries [first, stop) of Shape(tensor, start, end) hold."""
    rank = ctx.rank(shape.input[0])
    if rank is None:
        return None
    lo, hi, _ = normalize_slice(int(attr(shape, "start", 0)), int(attr(shape, "end", rank)), 1, rank)
    s, e, _ = normalize_slice(first, stop, 1, hi - lo)
    return (shape.input[0], list(range(lo + s, lo + e))) if e > s else None


def copies_input_dim(ctx, entry, j: int, data: str, in_dims) -> bool:
    """Whether target `entry` at position j keeps dimension j of the data: 0, the same static size, or a copy
    of a dimension that is the data's dimension j at run time (see `_same_dim`)."""
    if entry is None:
        return False
    value = entry[0]
    if value == 0 or (isinstance(value, int) and isinstance(in_dims[j], int) and value == in_dims[j]):
        return True
    dim = entry[2] if len(entry) > 2 else None
    return dim is not None and _same_dim(ctx, data, j, dim[0], dim[1])


def _symbolic_same(ctx, a: str, i: int, b: str, k: int) -> bool:
    """A second opinion where onnx's inference lost the symbols (it does behind computed Slice bounds and
    Expand shapes): onnxruntime's symbolic inference of the model without pinned shapes, run once per
    analysis and only when a rule needs it. The same symbol or static size there is the same size for
    every input."""
    info = ctx.graph.unpinned_symbolic_shapes
    da, db = info.dims(a) or _declared_dims(ctx, a), info.dims(b) or _declared_dims(ctx, b)
    if da is None or db is None or not (0 <= i < len(da) and 0 <= k < len(db)):
        return False
    return da[i] is not None and da[i] == db[k]


def _declared_dims(ctx, name: str):
    """The dims a graph input declares (symbols for dynamic axes), whatever shapes were pinned."""
    for vi in ctx.graph.graph.input:
        if vi.name == name and vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                         for d in vi.type.tensor_type.shape.dim)
    return None


def filled_dims(ctx, name: str):
    """The dims of `name`, with the static sizes shape inference lost behind an Expand (whose shape is
    computed) or Unsqueeze filled in where the shape's entries and the input tell them."""
    dims = ctx.dims(name)
    if dims is None or all(isinstance(d, int) for d in dims):
        return dims
    return tuple(d if isinstance(d, int) else (_static_dim(ctx, name, i) or d) for i, d in enumerate(dims))


def _static_dim(ctx, name: str, i: int, depth: int = 0):
    d = _dim_of(ctx, name, i)
    if isinstance(d, int) or depth > 16:
        return d
    node, rank = ctx.graph.producer.get(name), ctx.rank(name)
    if node is None or rank is None:
        return None
    if node.op_type in ("Identity", "Cast"):
        return _static_dim(ctx, node.input[0], i, depth + 1)
    if node.op_type == "Unsqueeze":
        axes = int_list(ctx, node, 1, "axes")
        if axes is None:
            return None
        inserted = {x % rank for x in axes}
        return 1 if i in inserted else _static_dim(ctx, node.input[0], i - sum(x < i for x in inserted), depth + 1)
    if node.op_type == "Expand":
        x, entries = node.input[0], vector_entries(ctx, node, 1)
        rx = ctx.rank(x)
        if entries is None or rx is None:
            return None
        xi, pos = i - (rank - rx), i - (rank - len(entries))
        xd = 1 if xi < 0 else _static_dim(ctx, x, xi, depth + 1)
        e = 1 if pos < 0 else (entries[pos][0] if entries[pos] is not None else None)
        if xd == 1 and isinstance(e, int) and e >= 1:
            return e
        if e == 1:
            return xd
    return None


def _same_dim(ctx, a: str, i: int, b: str, k: int, depth: int = 0) -> bool:
    """Whether dimension i of tensor `a` is dimension k of tensor `b` at run time: the same tensor and axis,
    the same static size or shape-inference symbol, or, where inference lost them, `a` made from `b` by
    Identity / Cast / Unsqueeze, or by an Expand whose shape copies that dimension or broadcasts it."""
    if a == b and i == k:
        return True
    da, db = _dim_of(ctx, a, i), _dim_of(ctx, b, k)
    if da is not None and da == db:
        return True
    if depth == 0 and _symbolic_same(ctx, a, i, b, k):
        return True
    node = ctx.graph.producer.get(a)
    if node is None or depth > 16:
        return False
    if node.op_type in ("Identity", "Cast"):
        return _same_dim(ctx, node.input[0], i, b, k, depth + 1)
    rank = ctx.rank(a)
    if rank is None:
        return False
    if node.op_type == "Unsqueeze":
        axes = int_list(ctx, node, 1, "axes")
        inserted = None if axes is None else {x % rank for x in axes}
        if inserted is None or i in inserted:
            return False
        return _same_dim(ctx, node.input[0], i - sum(x < i for x in inserted), b, k, depth + 1)
    if node.op_type == "Expand":
        x, entries = node.input[0], vector_entries(ctx, node, 1)
        rx = ctx.rank(x)
        if entries is None or rx is None:
            return False
        xi, pos = i - (rank - rx), i - (rank - len(entries))
        entry = entries[pos] if pos >= 0 else None
        x_is = xi >= 0 and _same_dim(ctx, x, xi, b, k, depth + 1)
        x_one = xi < 0 or _dim_of(ctx, x, xi) == 1
        e_dim = entry[2] if entry is not None and len(entry) > 2 else None
        e_is = e_dim is not None and _same_dim(ctx, e_dim[0], e_dim[1], b, k, depth + 1)
        e_one = pos < 0 or (entry is not None and entry[0] == 1)
        return (x_is and (e_one or e_is)) or (x_one and e_is)
    return False
