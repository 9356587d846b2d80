"""Runs the op rules over a graph and collects channel groups.

`analyze(graph, registry)` visits nodes in order. Each tracked activation carries a `Track`: which axis is
its channel axis and the layout of that axis. Rules read tracks of inputs, set tracks of outputs, attach
constant slices (`Place`s) to layouts and block layouts they cannot follow. At the end every leaf space
is one `Group`: the places that must be sliced together, or the reasons it cannot be pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import onnx

from ..graph import DEFAULT_DOMAINS, Graph, subgraph_outer_names
from .layout import Layout, Space, Spaces, length
from .rules import Registry

ROLES = ("out", "in", "bias", "param")  # weight rows that produce / weight slices that read / bias / per-channel
SCORED_ROLES = ("out", "in")
QUANTIZED_OPS = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearConcat",
}
NORMALIZING_OPS = {"LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization", "SkipLayerNormalization",
                   "SkipSimplifiedLayerNormalization", "GroupNormalization", "Softmax", "LpNormalization"}
QUANTIZED_REASON = "quantized ops are not pruned (prune the float model, then quantize it)"


@dataclass
class Track:
    axis: int
    layout: Layout


@dataclass
class Place:
    """Axis `axis` of constant `root` holds the channels of `layout`; node `node` reads it as `role`."""

    root: str
    axis: int
    layout: Layout
    role: str
    node: str


@dataclass
class ShapeRead:
    """A Shape output whose entry `position` is the channel count of `layout`."""

    layout: Layout
    position: int
    node: str


@dataclass
class Group:
    id: int
    space: Space
    size: int
    places: list[Place]
    reasons: list[str]

    @property
    def prunable(self) -> bool:
        return not self.reasons

    @property
    def members(self) -> list[str]:
        return list(dict.fromkeys(p.node for p in self.places))


RewriteFn = Callable[["object"], None]  # receives the Rewriter


@dataclass
class Analysis:
    graph: Graph
    spaces: Spaces
    tracks: dict[str, Track]
    places: list[Place]
    groups: list[Group]
    fixes: list[tuple[str, RewriteFn]] = field(default_factory=list)
    declined: dict[str, str] = field(default_factory=dict)  # node -> why its rule did not follow it (Context)


class Context:
    """What a rule can see and record while the analysis visits one node after another."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.spaces = Spaces()
        self.tracks: dict[str, Track] = {}
        self.places: list[Place] = []
        self.shape_reads: dict[str, ShapeRead] = {}
        self.fixes: list[tuple[str, RewriteFn]] = []
        self._place_layouts: dict[tuple[str, int], Layout] = {}
        self._covered: dict[tuple[str, int], set[str]] = {}  # (weight, axis) -> nodes that place that axis
        self.uses: dict[str, set[str]] = {}
        self.declined: dict[str, str] = {}  # node -> the first reason a rule gave for not following it

    # ---- reading -----------------------------------------------------------------------------------
    def track(self, name: str) -> Optional[Track]:
        """The track of tensor `name` (its channel axis and that axis's layout), or None where no rule has tracked
        it: a constant, a graph input, an untracked activation, or the empty name of an omitted optional input."""
        return self.tracks.get(name) if name else None

    def rank(self, name: str) -> Optional[int]:
        """The rank of tensor `name`: a constant's, or the one shape inference gives; None where unknown."""
        return self.graph.rank(name)

    def dims(self, name: str):
        """The dims of tensor `name`: a constant's shape, or what shape inference gives (an int where static, a
        string where symbolic, None where unknown); None where even the rank is unknown. A rule that needs a
        dim to hold for every input checks that it is an int."""
        return self.graph.dims(name)

    def is_constant(self, name: str) -> bool:
        """Whether tensor `name` is a constant: an initializer or a Constant output, also read through Identity
        and Cast (see `Graph.constant_root`); the rewriter can slice its values."""
        return self.graph.is_constant(name)

    def length(self, layout: Layout) -> int:
        """The number of channels `layout` spans (the sum of its segments)."""
        return length(layout)

    # ---- recording ---------------------------------------------------------------------------------
    def set_track(self, name: str, axis: int, layout: Layout) -> None:
        """Record that axis `axis` of the output `name` carries `layout`'s channels, in the same order (the rule
        guarantees nothing is mixed across channels). The empty name (an omitted optional output) is ignored."""
        if name:
            self.tracks[name] = Track(axis, layout)

    def new_layout(self, size: int, node: onnx.NodeProto) -> Layout:
        """A fresh channel space of `size` channels created at `node` (a Conv's or Gemm's output channels), as a
        layout of one segment; it is tied to no other space until `align` or a param joins them."""
        return self.spaces.layout(size, origin=node.name)

    def param(self, node: onnx.NodeProto, index: int, axis: int, layout: Layout, role: str) -> bool:
        """Axis `axis` of the constant at input `index` of `node` carries `layout`'s channels, read as `role` (one of
        ROLES: "out" weight rows that produce the channels, "in" weight slices that read them, "bias", "param" a
        per-channel value). Returns False, recording nothing, when the input is not a constant; blocks `layout` and
        returns False when that axis does not have its length, or when the weight is shared with a layout that
        cannot be aligned to it. The rewriter slices every place of a group along its axis."""
        assert role in ROLES
        name = node.input[index] if index < len(node.input) else ""
        root = self.graph.constant_root(name) if name else None
        if root is None:
            return False
        shape = self.graph.const_shape(name)
        if not 0 <= axis < len(shape) or shape[axis] != length(layout):
            self.block(layout, node, f"input {index} ({name}) does not have {length(layout)} channels on axis {axis}")
            return False
        key = (root, axis)
        if key in self._place_layouts and not self.align(self._place_layouts[key], layout, node, f"shared weight {root}"):
            return False
        self._place_layouts.setdefault(key, layout)
        self.places.append(Place(root, axis, layout, role, node.name))
        self._covered.setdefault(key, set()).add(node.name)
        return True

    def align(self, a: Layout, b: Layout, node: onnx.NodeProto, what: str = "inputs") -> bool:
        """Tie layouts `a` and `b` channel for channel (an Add's two operands, a shared weight): afterwards they
        are pruned together. Where their lengths or segmentations cannot be matched, blocks both with a reason
        naming `what` and returns False."""
        if self.spaces.align(a, b):
            return True
        reason = f"cannot match the channels of its {what}"
        self.block(a, node, reason)
        self.block(b, node, reason)
        return False

    def block(self, layout: Layout, node: Optional[onnx.NodeProto], reason: str) -> None:
        """Mark every space under `layout` as unprunable, for `reason` (a sentence a user reads: say what the op
        does that the analysis cannot follow); the reason is prefixed with `node`'s op type and name when given."""
        where = f"{node.op_type} '{node.name}': " if node is not None else ""
        self.spaces.block(layout, where + reason)

    def block_input(self, node: onnx.NodeProto, index: int, reason: str) -> None:
        """Block whatever input `index` of `node` carries: the layout of its track, the layout whose channel count
        it holds as a shape read, and, for a constant, a note that `node` uses it (so that a later param on it is
        refused). An omitted input or an untracked one blocks nothing. `node` counts as declined (the first reason a
        rule gave for it is what reports show)."""
        self.declined.setdefault(node.name, reason)
        name = node.input[index] if index < len(node.input) else ""
        track = self.track(name)
        if track is not None:
            self.block(track.layout, node, reason)
        read = self.shape_reads.get(name)
        if read is not None:
            self.block(read.layout, node, reason)
        root = self.graph.constant_root(name) if name else None
        if root is not None:
            self.uses.setdefault(root, set()).add(f"{node.name} ({reason})")

    def block_tracked_inputs(self, node: onnx.NodeProto, reason: str, skip: tuple[int, ...] = ()) -> None:
        """`block_input` for every input of `node` that is tracked or a shape read, except the indices in `skip`:
        what a rule does for an op it cannot follow."""
        self.declined.setdefault(node.name, reason)
        for i, name in enumerate(node.input):
            if i not in skip and (self.track(name) is not None or name in self.shape_reads):
                self.block_input(node, i, reason)

    def not_constant_reason(self, name: str, what: str = "weight") -> str:
        """Why input `name` is not a constant weight, in words a user can act on."""
        producer = self.graph.producer.get(name)
        if producer is not None and producer.op_type in QUANTIZED_OPS:
            return f"its {what} comes from {producer.op_type} '{producer.name}': " + QUANTIZED_REASON
        if producer is not None:
            return f"its {what} is not a constant (computed by {producer.op_type} '{producer.name}')"
        return f"its {what} is not a constant"

    def unknown_shape_reason(self, name: str, what: str = "its input") -> str:
        """Why `name`'s shape is unknown: the op where shape inference lost track, or the graph input that does
        not state its rank."""
        origin = _shape_origin(self.graph, name)
        if origin is None:
            return f"the shape of {what} is unknown"
        if isinstance(origin, str):
            return f"the shape of {what} is unknown: graph input '{origin}' does not state it (give --shape {origin}=...)"
        domain = f"{origin.domain} " if origin.domain not in DEFAULT_DOMAINS else ""
        return (f"the shape of {what} is unknown (it comes from {domain}{origin.op_type} '{origin.name}', whose "
                f"output shape neither onnx nor onnxruntime could infer); --shape does not reach past it")

    def untracked_reason(self, name: str, label: str) -> str:
        """Why an operand met by a tracked one blocks it: its channels are tied to no group, and where they come from
        (the residual stream of a transformer: the operand a LayerNorm produces or reads)."""
        producer = self.graph.producer.get(name)
        norm = producer if producer is not None and producer.op_type in NORMALIZING_OPS else _normalizing_reader(
            self.graph, name)
        if norm is not None:
            return (f"{label} has channels that cannot be pruned: they are the residual stream (normalized by "
                    f"{norm.op_type} '{norm.name}')")
        if producer is None:
            origin = "a graph input" if name in self.graph.input_names else "a constant"
        else:
            origin = f"{producer.op_type} '{producer.name}'"
        return f"{label} has channels that cannot be pruned: they come from {origin}"

    def on_rewrite(self, node: onnx.NodeProto, fn: RewriteFn) -> None:
        """Have `fn(rewriter)` run when the model is rewritten, after the weights are sliced: for what slicing
        weights does not cover (a Reshape target's channel entry, a Split's sizes, a head count attribute). It
        must read the kept channels from the rewriter, never assume how many are kept, and change the model only
        through the rewriter's methods: they take the analyzed graph's nodes and edit the rewritten copy's."""
        self.fixes.append((node.name, fn))


def _normalizing_reader(graph: Graph, name: str, hops: int = 3) -> Optional[onnx.NodeProto]:
    """A normalization over the last (channel) axis that reads `name` within a few ops: LayerNorm and kin, or the
    ReduceMean of a decomposed RMSNorm (x -> Pow -> ReduceMean over the last axis)."""
    frontier, seen = [name], {name}
    for _ in range(hops):
        following = []
        for tensor in frontier:
            for node, _ in graph.consumers.get(tensor, []):
                if node.op_type in NORMALIZING_OPS or _reduces_last_axis(graph, node):
                    return node
                following += [o for o in node.output if o and o not in seen]
                seen.update(node.output)
        frontier = following
    return None


def _reduces_last_axis(graph: Graph, node: onnx.NodeProto) -> bool:
    if node.op_type not in ("ReduceMean", "ReduceSumSquare", "ReduceL2"):
        return False
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1:
        axes = graph.int_values(node.input[1])
    rank = graph.rank(node.input[0])
    return axes is not None and len(axes) == 1 and (axes[0] == -1 or (rank is not None and axes[0] == rank - 1))


def _shape_origin(graph: Graph, name: str):
    """The node whose inputs have known ranks but whose output `name` leads back to has none; a graph input's
    name when the trail ends there; None when it cannot be told."""
    seen: set[str] = set()
    while name and name not in seen:
        seen.add(name)
        producer = graph.producer.get(name)
        if producer is None:
            return name if name in graph.input_names else None
        unknown = [i for i in producer.input if i and not graph.is_constant(i) and graph.rank(i) is None]
        if not unknown:
            return producer
        name = unknown[0]
    return None


WEIGHT_LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN")
SHOWN_LAYERS = 2


def subgraph_layers(graph: Graph) -> list[str]:
    """What weight layers the model holds inside If/Loop/Scan bodies, which are not pruned: one phrase per
    top-level node that holds any, e.g. "12 Conv inside If 'If_0' (6 in then_branch, 6 in else_branch)"."""
    phrases = []
    for node in graph.nodes():
        per_body = [(a.name, body, _count_layers(body)) for a in node.attribute
                    for body in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]
        totals: dict[str, int] = {}
        for _, _, counts in per_body:
            for op, n in counts.items():
                totals[op] = totals.get(op, 0) + n
        if not totals:
            continue
        what = ", ".join(f"{n} {op}" for op, n in sorted(totals.items()))
        bodies = [f"{sum(c.values())} in {attr}" for attr, _, c in per_body if c]
        detail = f" ({', '.join(bodies)})" if len(per_body) > 1 else ""
        phrases.append(f"{what} inside {node.op_type} '{node.name}'{detail}")
    return phrases


def _count_layers(body: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in body.node:
        if node.op_type in WEIGHT_LAYERS and node.domain in DEFAULT_DOMAINS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        for a in node.attribute:
            for inner in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                for op, n in _count_layers(inner).items():
                    counts[op] = counts.get(op, 0) + n
    return counts


def subgraph_reason(graph: Graph) -> str:
    """A phrase for the layers the model keeps inside subgraphs, or "" when it keeps none there."""
    phrases = subgraph_layers(graph)
    return f"layers inside subgraphs are not pruned: {'; '.join(phrases)}" if phrases else ""


def declined_layers(analysis: "Analysis") -> list[str]:
    """For each reason a rule gave for not following a top-level weight layer (one whose weights no group holds):
    "MatMul 'x' (and 2 more layers): reason"."""
    graph = analysis.graph
    held = {p.node for p in analysis.places if p.role == "out"}
    by_reason: dict[str, list[str]] = {}
    for node in graph.nodes():
        if node.op_type not in WEIGHT_LAYERS or node.domain not in DEFAULT_DOMAINS or node.name in held:
            continue
        if len(node.input) < 2 or not graph.is_constant(node.input[1]):
            continue
        reason = analysis.declined.get(node.name)
        if reason:
            by_reason.setdefault(reason, []).append(f"{node.op_type} '{node.name}'")
    return [layers[0] + (f" (and {len(layers) - 1} more layers)" if len(layers) > 1 else "") + f": {reason}"
            for reason, layers in by_reason.items()]


def no_group_reason(analysis: "Analysis") -> str:
    """Why a model has no channel group at all: quantized ops, layers inside subgraphs, layers a rule declined."""
    graph = analysis.graph
    quantized = sorted({n.op_type for n in graph.nodes() if n.op_type in QUANTIZED_OPS})
    if quantized:
        return f"the model is quantized ({', '.join(quantized)}); " + QUANTIZED_REASON
    reasons = [r for r in [subgraph_reason(graph)] if r]
    declined = declined_layers(analysis)
    if declined:
        more = f" (+{len(declined) - SHOWN_LAYERS} more)" if len(declined) > SHOWN_LAYERS else ""
        reasons.append("; ".join(declined[:SHOWN_LAYERS]) + more)
    return "; ".join(reasons) or f"no {', '.join(WEIGHT_LAYERS[:-1])} or {WEIGHT_LAYERS[-1]} reads a constant weight"


def unsupported_reason(node: onnx.NodeProto) -> str:
    if node.domain not in DEFAULT_DOMAINS:
        return f"custom-domain op {node.domain}::{node.op_type} is not supported"
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return f"{node.op_type} holds subgraphs, which onnxprune does not enter"
    if node.op_type in QUANTIZED_OPS:
        return QUANTIZED_REASON
    return f"{node.op_type} is not supported (no pruning rule)"


def analyze(graph: Graph, registry: Registry) -> Analysis:
    """The channel groups of `graph`'s model, found by running `registry`'s rules over its nodes in order. Reads
    the model and changes nothing in it; the Analysis holds `graph` (and so that model) for the rewriter."""
    ctx = Context(graph)
    for node in graph.nodes():
        if graph.is_alias(node) or node.output[0] in graph.constant_nodes:
            continue
        for name in node.input:
            root = graph.constant_root(name) if name else None
            if root is not None:
                ctx.uses.setdefault(root, set()).add(node.name)
        for name in subgraph_outer_names(node):
            if graph.constant_root(name) is not None or ctx.track(name) or name in ctx.shape_reads:
                _block_name(ctx, node, name, "read inside a subgraph, which onnxprune does not enter")
        rule = registry.get(node)
        if rule is None:
            ctx.block_tracked_inputs(node, unsupported_reason(node))
            continue
        if not rule.reads_shapes:
            for i, name in enumerate(node.input):
                if name in ctx.shape_reads:
                    ctx.block_input(node, i, "computes with a shape that holds a channel count")
        rule.apply(node, ctx)
    for name in graph.output_names:
        _block_name(ctx, None, name, f"graph output '{name}' keeps its shape")
    for place in ctx.places:  # a weight axis is sliced only if every reader of the weight follows that axis
        others = ctx.uses.get(place.root, set()) - ctx._covered.get((place.root, place.axis), set())
        if others:
            ctx.block(place.layout, None, f"weight '{place.root}' is also read by {sorted(others)[0]}")
    return Analysis(graph, ctx.spaces, ctx.tracks, ctx.places, _groups(ctx), ctx.fixes, ctx.declined)


def _block_name(ctx: Context, node: Optional[onnx.NodeProto], name: str, reason: str) -> None:
    track = ctx.track(name)
    if track is not None:
        ctx.block(track.layout, node, reason)
    if name in ctx.shape_reads:
        ctx.block(ctx.shape_reads[name].layout, node, reason)
    root = ctx.graph.constant_root(name)
    if root is not None:
        ctx.uses.setdefault(root, set()).add(reason)


def _groups(ctx: Context) -> list[Group]:
    by_leaf: dict[Space, Group] = {}
    for place in ctx.places:
        for seg in ctx.spaces.resolve(place.layout):
            group = by_leaf.get(seg.space)
            if group is None:
                group = by_leaf[seg.space] = Group(len(by_leaf), seg.space, seg.space.size, [], seg.space.blocks)
            group.places.append(place)
    for group in by_leaf.values():
        if not any(p.role == "out" for p in group.places) and not group.reasons:
            group.reasons.append("no weights produce these channels")
    return list(by_leaf.values())
