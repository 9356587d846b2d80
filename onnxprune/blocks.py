"""Finds the removable blocks of a graph: residual branches y = x + f(x) whose only effect is the Add.

For every Add of two computed tensors, each input in turn is taken as the skip x and the other as f(x). The
branch is the set of nodes whose outputs reach only that Add input: walking back from f(x)'s producer, a node
joins when every consumer of every output it has is already in the branch (or is the Add, at the branch's
input). Nodes are visited in reverse graph order, so a node is decided after all of its consumers. The walk
stops at x; whatever else the branch reads (constants, an attention mask or rotary tables shared by every
layer) stays outside, as long as nothing in the branch is read from outside it. The block is removable when
the branch reads x and the Add does not broadcast x (the output has x's shape): then dropping the branch and
reading x where the Add's output was read computes the same as a branch that outputs zeros (oracle.py).

A norm after the Add (post-norm transformers) stays: only the branch goes. Branches of two blocks are either
disjoint or nested (one block inside the other's branch); `nested` tells which.

Read-only: the graph is not changed (see depth.py for the rewrite).
"""

from __future__ import annotations

import ast
import heapq
from dataclasses import dataclass, field
from typing import Optional

from .deps.context import QUANTIZED_OPS, QUANTIZED_REASON
from .graph import DEFAULT_DOMAINS, Graph, subgraph_outer_names


@dataclass
class Block:
    add: str  # the Add node's name
    output: str  # the Add's output tensor: read as `skip` once the block is removed
    skip: str  # x
    branch: str  # f(x): the Add's other input
    branch_index: int  # which input of the Add f(x) is
    elem_type: int  # of f(x) (the oracle multiplies it by a zero of this type)
    nodes: list[str] = field(default_factory=list)  # the branch's nodes, in graph order
    side_inputs: list[str] = field(default_factory=list)  # computed tensors the branch reads besides x
    label: str = ""  # the branch's nodes' common name prefix, or the Add's name
    weights: list[str] = field(default_factory=list)  # the initializers its branch reads: a name that survives re-export

    def contains(self, other: "Block") -> bool:
        return other.add in self.nodes


@dataclass
class BlockSearch:
    blocks: list[Block]
    rejected: list[tuple[str, str]]  # (Add node, why it is not a removable block)
    custom_ops: list[str] = field(default_factory=list)  # domain.op of custom-domain ops, which are not followed
    quantized_ops: list[str] = field(default_factory=list)  # ConvInteger, QLinearConv, ...: their layers are no layers

    def why_none(self) -> str:
        """Why no block was found, for "nothing to remove" messages."""
        if self.quantized_ops:
            return f"the model is quantized ({', '.join(self.quantized_ops)}); {QUANTIZED_REASON}"
        if not self.rejected:
            fused = f"; custom-domain ops ({', '.join(self.custom_ops[:4])}) may hold fused residual Adds, which " \
                    "are not followed: prune the model before an optimizer fuses it" if self.custom_ops else ""
            return f"the graph has no Add of two computed tensors (no residual connection y = x + f(x)){fused}"
        reasons = list(dict.fromkeys(reason for _, reason in self.rejected))
        add, reason = self.rejected[0]
        more = f" (+{len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
        return f"no Add of two computed tensors is a removable residual x + f(x): {len(self.rejected)} Add(s), " \
               f"e.g. {add!r}: {reason}{more}"


def find_blocks(graph: Graph) -> BlockSearch:
    order = {node.name: i for i, node in enumerate(graph.graph.node)}
    by_name = {node.name: node for node in graph.graph.node}
    readers = _readers(graph)
    outputs = set(graph.output_names)
    blocks, rejected = [], []
    for node in graph.graph.node:
        if node.op_type != "Add" or node.domain not in DEFAULT_DOMAINS or len(node.input) != 2:
            continue
        if any(not name or graph.is_constant(name) for name in node.input) or node.input[0] == node.input[1]:
            continue
        reasons = []
        # f(x) as either input (at most one can be: the other would read f(x) too); the later-computed one first,
        # whose reason tells more when neither is
        later = sorted((0, 1), key=lambda i: -order.get(getattr(graph.producer.get(node.input[i]), "name", ""), -1))
        for index in later:
            found = _block(graph, node, index, order, by_name, readers, outputs)
            if isinstance(found, Block):
                blocks.append(found)
                break
            reasons.append(found)
        else:
            # the more telling reason: a branch that reads x but cannot go beats "not x + f(x)"
            rejected.append((node.name, min(reasons, key=lambda r: r.startswith(NOT_RESIDUAL))))
    custom = sorted({f"{n.domain}.{n.op_type}" for n in graph.graph.node if n.domain not in DEFAULT_DOMAINS})
    labels = [b.label for b in blocks]
    for b in blocks:  # a prefix that names several blocks ("p2o" in Paddle exports) tells none apart: the Add does
        if labels.count(b.label) > 1:
            b.label = b.add
    quantized = sorted({n.op_type for n in graph.graph.node if n.op_type in QUANTIZED_OPS})
    return BlockSearch(blocks, rejected, custom, quantized if not blocks else [])


NOT_RESIDUAL = "neither input is computed from the other"
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def is_layer(graph: Graph, node) -> bool:
    """A Conv, ConvTranspose, Gemm or MatMul with a constant weight (its second input)."""
    return (node.op_type in LAYER_OPS and node.domain in DEFAULT_DOMAINS and len(node.input) > 1
            and graph.is_constant(node.input[1]))


def _block(graph: Graph, add, index: int, order, by_name, readers, outputs):
    """The Block with f(x) = add.input[index], or why there is none."""
    skip, branch = add.input[1 - index], add.input[index]
    start = graph.producer.get(branch)
    if start is None:
        return f"{NOT_RESIDUAL} ({branch!r} is a graph input)"
    members: set[str] = set()
    heap = [(-order[start.name], start.name)]
    queued = {start.name}
    side: list[str] = []
    reads_skip = False
    while heap:
        _, name = heapq.heappop(heap)
        node = by_name[name]
        other = _other_reader(node, members, add, index, branch, readers, outputs)
        if other is not None:
            if name == start.name:
                return f"f(x) {branch!r} is also read by {other}"
            side.extend(o for o in node.output if o)
            continue
        members.add(name)
        for tensor in list(node.input) + sorted(subgraph_outer_names(node)):
            if not tensor or graph.is_constant(tensor):  # a Constant node only the branch read goes as unused
                continue
            if tensor == skip:
                reads_skip = True
                continue
            producer = graph.producer.get(tensor)
            if producer is None:
                side.append(tensor)  # a graph input
            elif producer.name not in queued:
                queued.add(producer.name)
                heapq.heappush(heap, (-order[producer.name], producer.name))
    if not reads_skip:
        return f"{NOT_RESIDUAL} (e.g. a projection shortcut: both paths start from the block's input)"
    if not any(is_layer(graph, by_name[name]) for name in members):
        return f"the branch has no layer with weights ({', '.join(LAYER_OPS)}): an elementwise expression such as " \
               "GELU's x + 0.044715 x^3, not a block"
    out_dims, skip_dims = graph.dims(add.output[0]), graph.dims(skip)
    if not _same_shape(out_dims, skip_dims):
        return f"the Add may broadcast x {skip!r}: its output's shape {_dims(out_dims)} is not known to be x's " \
               f"{_dims(skip_dims)}"
    info = graph.shapes.get(branch)
    nodes = sorted(members, key=order.get)
    used = {t for n in nodes for t in by_name[n].input}
    weights = sorted({graph.constant_root(t) for t in used if graph.constant_root(t) in graph.initializers})
    return Block(add.name, add.output[0], skip, branch, index, info.elem_type if info else 0, nodes,
                 sorted(t for t in set(side) if t in used), _label([by_name[n] for n in nodes]) or add.name,
                 weights)


def _other_reader(node, members, add, index, branch, readers, outputs) -> Optional[str]:
    """A reader of `node`'s outputs outside the branch (a node name or "the graph output ..."), or None."""
    for tensor in node.output:
        if not tensor:
            continue
        if tensor in outputs:
            return f"the graph output {tensor!r}"
        for reader, i in readers.get(tensor, ()):
            if reader in members or (reader == add.name and i == index and tensor == branch):
                continue
            return repr(reader)
    return None


def _readers(graph: Graph) -> dict[str, list[tuple[str, int]]]:
    """tensor -> (node name, input index) of each reader; -1 for a read from inside a node's subgraph."""
    readers: dict[str, list[tuple[str, int]]] = {}
    for node in graph.graph.node:
        for i, name in enumerate(node.input):
            if name:
                readers.setdefault(name, []).append((node.name, i))
        for name in subgraph_outer_names(node):
            readers.setdefault(name, []).append((node.name, -1))
    return readers


def _label(nodes) -> str:
    """A name for the block, for reports: the innermost module scope its nodes share where the exporter recorded
    scopes (torch.onnx's dynamo exporter), else their names' common prefix up to a '/' or '.', or ""."""
    scopes = [_scopes(node) for node in nodes]
    if scopes and all(scopes):
        common = scopes[0]
        for other in scopes[1:]:
            n = 0
            while n < min(len(common), len(other)) and common[n] == other[n]:
                n += 1
            common = common[:n]
        named = [s for s in common if s]
        if named:
            return named[-1]
    names = [node.name for node in nodes]
    if not names:
        return ""
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    if not all(len(name) == n or name[n] in "/._" for name in names):  # cut inside a word: back to a '/' or '.'
        n = max(first.rfind("/", 0, n), first.rfind(".", 0, n)) + 1
    return first[:n].rstrip("/._")


def _scopes(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [str(v) for v in value] if isinstance(value, list) else []
    return []


def _same_shape(out_dims, skip_dims) -> bool:
    """Whether the Add's output has x's shape: the same rank, and each dim the same number, or unknown in both
    (dynamic dims that shape inference named apart, such as the batch)."""
    if out_dims is None or skip_dims is None or len(out_dims) != len(skip_dims):
        return False
    return all(a == b or not isinstance(a, int) and not isinstance(b, int) for a, b in zip(out_dims, skip_dims))


def _dims(dims) -> str:
    return "unknown" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def removable(order: list[Block], count: int) -> list[Block]:
    """The first `count` blocks of `order` (lowest scores first), skipping any nested with one already taken."""
    taken: list[Block] = []
    for block in order:
        if len(taken) >= count:
            break
        if any(block.contains(t) or t.contains(block) for t in taken):
            continue
        taken.append(block)
    return taken
