"""Unstructured magnitude pruning: zero the smallest weights and keep every shape.

This exists to *show* something: a weight tensor full of zeros is still a dense tensor, and dense
Conv/Gemm/MatMul kernels do exactly the same work on zeros as on any other value. The pruned model is
the same size (uncompressed) and, on ordinary execution providers, the same speed. Only a sparse kernel
(for example 2:4 structured sparsity on tensor cores that support it) can turn zeros into time, which is
why the N:M `pattern` is offered. Use structured (channel) pruning to make a model smaller and faster.

Which tensors are weights: input 1 of Conv and ConvTranspose, input B of Gemm, the constant input of
MatMul (B when both are constant), and W and R of LSTM, GRU and RNN ([dirs, gates * H, K]: K is the input). A weight may be an initializer or a `Constant` node's `value`,
reached directly or through Identity nodes, and may be shared by several nodes: it is then zeroed once
and reported once. Biases, normalization parameters and every other constant are never touched.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from .deps.ops.recurrent import GATES as RECURRENT_GATES
from .errors import OptionError
from .graph import node_names, subgraph_outer_names
from .plan import exclude_patterns, unmatched_excludes

__all__ = [
    "LayerSparsity",
    "SkippedWeight",
    "UnstructuredReport",
    "parse_pattern",
    "prune_unstructured",
]

SCOPES = ("layer", "global")
# With a pattern, `sparsity` must be 1 - N/M to within this (so a typed 0.33 matches 2:3).
PATTERN_TOLERANCE = 0.005

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
}
_DEFAULT_DOMAINS = ("", "ai.onnx")
_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", *RECURRENT_GATES)
# Elements processed at once by the passes that only read weights (bounds temporaries on huge weights).
_CHUNK = 1 << 22
# Global threshold search: once a radix bucket holds at most this many magnitudes, gather and partition them.
_GATHER_LIMIT = 1 << 22

Layout = tuple  # how a weight becomes [rows, K] with the reduction axis K last: see _to_rows


# --------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class LayerSparsity:
    """One weight tensor that was considered for zeroing (reported once even when shared)."""

    nodes: tuple[str, ...]  # the nodes that read the weight, in graph order
    weight: str  # the initializer's name, or the Constant node's output name
    shape: tuple[int, ...]
    dtype: str  # numpy name: float32, float16, float64
    elements: int
    zeros_before: int
    zeros_after: int
    dense_remainder: int = 0  # pattern only: elements left dense because K is not a multiple of M

    @property
    def node(self) -> str:
        return ", ".join(self.nodes)

    @property
    def sparsity(self) -> float:
        return self.zeros_after / self.elements if self.elements else 0.0

    @property
    def sparsity_before(self) -> float:
        return self.zeros_before / self.elements if self.elements else 0.0

    def to_dict(self) -> dict:
        return {
            "nodes": list(self.nodes),
            "weight": self.weight,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "elements": self.elements,
            "zeros_before": self.zeros_before,
            "zeros_after": self.zeros_after,
            "sparsity": self.sparsity,
            "dense_remainder": self.dense_remainder,
        }


@dataclass(frozen=True)
class SkippedWeight:
    """A weight-carrying node whose weight was left alone, and why."""

    nodes: tuple[str, ...]
    weight: str  # may be "" when the weight input is missing
    reason: str

    @property
    def node(self) -> str:
        return ", ".join(self.nodes)

    def to_dict(self) -> dict:
        return {"nodes": list(self.nodes), "weight": self.weight, "reason": self.reason}


@dataclass
class UnstructuredReport:
    """What `prune_unstructured` did: one row per zeroed weight, the skipped ones with reasons, totals."""

    sparsity: float  # the target: the requested sparsity, or 1 - N/M when a pattern was given
    scope: str
    pattern: Optional[tuple[int, int]] = None
    exclude: tuple[str, ...] = ()
    layers: list[LayerSparsity] = field(default_factory=list)
    skipped: list[SkippedWeight] = field(default_factory=list)
    # Global scope: every |w| below this was zeroed, and some equal to it (ties) so that the count is exact.
    threshold: Optional[float] = None
    warnings: list[str] = field(default_factory=list)  # e.g. an exclude pattern that matched no weight layer

    @property
    def total_elements(self) -> int:
        return sum(layer.elements for layer in self.layers)

    @property
    def total_zeros_before(self) -> int:
        return sum(layer.zeros_before for layer in self.layers)

    @property
    def total_zeros_after(self) -> int:
        return sum(layer.zeros_after for layer in self.layers)

    @property
    def total_sparsity(self) -> float:
        total = self.total_elements
        return self.total_zeros_after / total if total else 0.0

    @property
    def total_dense_remainder(self) -> int:
        return sum(layer.dense_remainder for layer in self.layers)

    def to_dict(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "scope": self.scope,
            "pattern": list(self.pattern) if self.pattern else None,
            "exclude": list(self.exclude),
            "threshold": self.threshold,
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": [skip.to_dict() for skip in self.skipped],
            "warnings": list(self.warnings),
            "totals": {
                "elements": self.total_elements,
                "zeros_before": self.total_zeros_before,
                "zeros_after": self.total_zeros_after,
                "sparsity": self.total_sparsity,
                "dense_remainder": self.total_dense_remainder,
            },
        }

    def format_table(self) -> str:
        """A plain-text table: one row per weight, a total row, then skipped weights and a speed note."""
        header = ["node", "weight", "shape", "dtype", "elements", "zeros before", "zeros after", "sparsity"]
        with_remainder = self.pattern is not None
        if with_remainder:
            header.append("dense remainder")
        rows = []
        for layer in self.layers:
            row = [
                layer.node,
                layer.weight,
                "x".join(str(d) for d in layer.shape) or "scalar",
                layer.dtype,
                str(layer.elements),
                str(layer.zeros_before),
                str(layer.zeros_after),
                f"{100 * layer.sparsity:.2f}%",
            ]
            if with_remainder:
                row.append(str(layer.dense_remainder))
            rows.append(row)
        total = [
            "total",
            f"{len(self.layers)} weights",
            "",
            "",
            str(self.total_elements),
            str(self.total_zeros_before),
            str(self.total_zeros_after),
            f"{100 * self.total_sparsity:.2f}%",
        ]
        if with_remainder:
            total.append(str(self.total_dense_remainder))
        numeric = set(range(4, len(header)))
        widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            return "  ".join(
                cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(cells)
            ).rstrip()

        pattern = f", pattern {self.pattern[0]}:{self.pattern[1]}" if self.pattern else ""
        out = [f"unstructured pruning: target sparsity {100 * self.sparsity:.2f}%, scope {self.scope}{pattern}"]
        if self.threshold is not None:
            out.append(f"global magnitude threshold: {self.threshold:.6g}")
        out += [line(header), line(["-" * w for w in widths])]
        out += [line(r) for r in rows]
        out += [line(["-" * w for w in widths]), line(total)]
        if self.skipped:
            out.append(f"skipped ({len(self.skipped)}):")
            for skip in self.skipped:
                weight = f" [{skip.weight}]" if skip.weight else ""
                out.append(f"  {skip.node}{weight}: {skip.reason}")
        out.append(
            "note: shapes are unchanged; dense kernels do the same work on zeros, "
            "so expect no speedup (and no smaller file) without sparse kernels or sparse storage."
        )
        return "\n".join(out)


# ------------------------------------------------------------------------------------------ options


def parse_pattern(text: str) -> tuple[int, int]:
    """Parse an 'N:M' pattern such as '2:4' (for the CLI); raise OptionError when malformed."""
    parts = str(text).strip().split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        n, m = int(parts[0]), int(parts[1])
    except ValueError:
        raise OptionError(f"pattern {text!r} is not of the form N:M, e.g. 2:4") from None
    return _check_pattern((n, m))


def _check_pattern(pattern) -> tuple[int, int]:
    try:
        n, m = pattern
    except (TypeError, ValueError):
        raise OptionError(f"pattern {pattern!r} must be a pair (N, M), e.g. (2, 4)") from None
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (n, m)):
        raise OptionError(f"pattern {pattern!r} must be two integers (N, M), e.g. (2, 4)")
    n, m = int(n), int(m)
    if not 1 <= n <= m:
        raise OptionError(f"pattern {n}:{m} must keep N of every M weights with 1 <= N <= M")
    return n, m


def _check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real):
        raise OptionError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    value = float(sparsity)
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise OptionError(f"sparsity must be in [0, 1), got {value!r}")
    return value


# ------------------------------------------------------------------------------------- finding weights


@dataclass
class _Use:
    index: int  # node index in graph.node
    label: str
    input_index: int
    kind: str  # conv, convT, gemmB, gemmBt, matmulB, matmulA
    group: int = 1


@dataclass
class _Weight:
    source: str
    tensor: Optional[onnx.TensorProto] = None
    uses: list[_Use] = field(default_factory=list)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(use.label for use in self.uses))


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


class _GraphIndex:
    """Producers, consumers and constants of the top-level graph of the input model (read only)."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.nodes = list(graph.node)
        self.labels = node_names(self.nodes)  # the names inspect and structured prune use
        self.initializers = {t.name: t for t in graph.initializer}
        self.sparse = {t.values.name for t in graph.sparse_initializer}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[tuple[int, int]]] = {}
        self.subgraph_refs: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
            for j, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((i, j))
            for name in subgraph_outer_names(node):
                self.subgraph_refs.setdefault(name, i)
        self.outputs = {o.name for o in graph.output}

    def is_op(self, index: int, op_type: str) -> bool:
        node = self.nodes[index]
        return node.op_type == op_type and node.domain in _DEFAULT_DOMAINS

    def resolve(self, name: str) -> tuple[Optional[str], str, str]:
        """Follow Identity nodes back from `name`: (source, kind, reason); kind is const/quantized/other."""
        seen = set()
        while name in self.producer and self.is_op(self.producer[name], "Identity"):
            if name in seen:  # pragma: no cover - a cycle means an invalid graph
                break
            seen.add(name)
            inputs = self.nodes[self.producer[name]].input
            name = inputs[0] if inputs else ""
        if not name:
            return None, "other", "the weight input is missing"
        if name in self.producer:
            index = self.producer[name]
            node = self.nodes[index]
            if self.is_op(index, "Constant"):
                return name, "const", ""
            if self.is_op(index, "DequantizeLinear"):
                source, kind, _ = self.resolve(node.input[0]) if node.input else (None, "other", "")
                dtype = self._dtype_name(source) if kind == "const" else "quantized"
                return None, "quantized", (
                    f"quantized weight ({dtype} through DequantizeLinear {self.labels[index]}): "
                    "only float weights are zeroed"
                )
            computed = f"the weight is computed by {node.op_type} node {self.labels[index]}, not a constant"
            return None, "other", computed
        if name in self.initializers:
            return name, "const", ""
        if name in self.sparse:
            return None, "other", "the weight is a sparse initializer (already sparse)"
        return None, "other", f"the weight {name!r} is a graph input, not a constant"

    def _dtype_name(self, source: Optional[str]) -> str:
        tensor = self.constant_tensor(source) if source else None
        if isinstance(tensor, onnx.TensorProto):
            return onnx.TensorProto.DataType.Name(tensor.data_type).lower()
        return "quantized"

    def constant_tensor(self, source: str) -> Union[onnx.TensorProto, str]:
        """The input model's TensorProto holding `source` (never written to), or why there is none."""
        if source in self.producer:
            node = self.nodes[self.producer[source]]
            for attr in node.attribute:
                if attr.name == "value":
                    return attr.t
            kinds = ", ".join(attr.name for attr in node.attribute) or "nothing"
            return f"the Constant node stores {kinds}, not a 'value' tensor"
        return self.initializers[source]

    def other_uses(self, source: str, weight_uses: set[tuple[int, int]]) -> list[str]:
        """Every read of `source` (through Identity chains) that is not one of `weight_uses`."""
        found, stack, seen = [], [source], {source}
        while stack:
            name = stack.pop()
            if name in self.outputs:
                found.append(f"graph output {name!r}")
            if name in self.subgraph_refs:
                found.append(f"a subgraph of node {self.labels[self.subgraph_refs[name]]}")
            for i, j in self.consumers.get(name, ()):
                if self.is_op(i, "Identity"):
                    out = self.nodes[i].output[0] if self.nodes[i].output else ""
                    if out and out not in seen:
                        seen.add(out)
                        stack.append(out)
                elif (i, j) not in weight_uses:
                    found.append(f"input {j} of {self.nodes[i].op_type} node {self.labels[i]}")
        return found


def _subgraph_nodes(node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
    """Every node inside `node`'s subgraphs (If branches, Loop and Scan bodies), at any depth."""
    for attr in node.attribute:
        graphs = list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        for graph in graphs:
            for inner in graph.node:
                yield inner
                yield from _subgraph_nodes(inner)


def _find_weights(index: _GraphIndex) -> tuple[list[_Weight], list[tuple[int, SkippedWeight]]]:
    """The constant weights of weight-carrying nodes, grouped by source; and (node index, skip) pairs."""
    weights: dict[str, _Weight] = {}
    skipped: list[tuple[int, SkippedWeight]] = []
    for i, node in enumerate(index.nodes):
        for j, inner in enumerate(_subgraph_nodes(node)):
            if inner.op_type in _WEIGHT_OPS and inner.domain in _DEFAULT_DOMAINS:
                inner_label = f"{index.labels[i]}/{inner.name or f'{inner.op_type}_{j}'}"
                reason = f"inside a subgraph of {node.op_type} node {index.labels[i]}: only the top graph is pruned"
                skipped.append((i, SkippedWeight((inner_label,), "", reason)))
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        label = index.labels[i]
        op = node.op_type
        if op in ("Conv", "ConvTranspose"):
            slots = [(1, "conv" if op == "Conv" else "convT")]
        elif op == "Gemm":
            slots = [(1, "gemmBt" if _attr_int(node, "transB", 0) else "gemmB")]
        elif op == "MatMul":
            names = list(node.input) + ["", ""]
            b, a = index.resolve(names[1]), index.resolve(names[0])
            if b[1] == "const" or (a[1] != "const" and b[1] == "quantized"):
                slots = [(1, "matmulB")]
            elif a[1] == "const" or a[1] == "quantized":
                slots = [(0, "matmulA")]
            else:
                reason = "no constant input (both MatMul inputs are computed)"
                skipped.append((i, SkippedWeight((label,), "", reason)))
                continue
        elif op in RECURRENT_GATES:
            slots = [(1, "recurrent"), (2, "recurrent")]  # W and R
        else:
            continue
        for slot, kind in slots:
            name = node.input[slot] if len(node.input) > slot else ""
            source, _, reason = index.resolve(name)
            if source is None:
                skipped.append((i, SkippedWeight((label,), name, reason)))
                continue
            use = _Use(i, label, slot, kind, _attr_int(node, "group", 1))
            weights.setdefault(source, _Weight(source)).uses.append(use)
    return list(weights.values()), skipped


def _layout(use: _Use, shape: tuple[int, ...]) -> Union[Layout, str]:
    """How to view a weight as [rows, K] with the reduction (input) axis K last, or why it cannot be."""
    rank = len(shape)
    if use.kind == "conv":
        return ("rows",) if rank >= 2 else f"Conv weight of rank {rank}"
    if use.kind == "convT":
        if rank < 2 or use.group < 1 or shape[0] % use.group:
            return f"ConvTranspose weight {list(shape)} does not fit group={use.group}"
        return ("convT", use.group)
    if use.kind in ("gemmBt", "matmulA", "recurrent") or (use.kind == "matmulB" and rank == 1):
        return ("last",) if rank >= 1 else "scalar weight"
    return ("second_last",) if rank >= 2 else f"weight of rank {rank}"  # gemmB, matmulB: [..., K, N]


def _to_rows(w: np.ndarray, layout: Layout) -> np.ndarray:
    """View (or copy) `w` as [rows, K]: each row is the reduction input of one output feature."""
    if layout[0] == "rows":
        return w.reshape(w.shape[0], -1)
    if layout[0] == "last":
        return w.reshape(-1, w.shape[-1])
    if layout[0] == "second_last":
        return np.ascontiguousarray(np.swapaxes(w, -1, -2)).reshape(-1, w.shape[-2])
    group = layout[1]  # ConvTranspose [Cin, Cout/g, k...]: rows are (g, Cout/g), K is (Cin/g, k...)
    cin, cout_g, kernel = w.shape[0], w.shape[1], w.shape[2:]
    grouped = w.reshape(group, cin // group, cout_g, *kernel)
    return np.ascontiguousarray(np.moveaxis(grouped, 2, 1)).reshape(group * cout_g, -1)


def _from_rows(rows: np.ndarray, layout: Layout, shape: tuple[int, ...]) -> np.ndarray:
    if layout[0] in ("rows", "last"):
        return rows.reshape(shape)
    if layout[0] == "second_last":
        return np.swapaxes(rows.reshape(*shape[:-2], shape[-1], shape[-2]), -1, -2)
    group = layout[1]
    cin, cout_g, kernel = shape[0], shape[1], shape[2:]
    grouped = rows.reshape(group, cout_g, cin // group, *kernel)
    return np.moveaxis(grouped, 1, 2).reshape(shape)


# ------------------------------------------------------------------------------------------- zeroing


def _target_count(sparsity: float, elements: int) -> int:
    """How many elements `sparsity` of `elements` is: rounded half up."""
    return min(elements, math.floor(sparsity * elements + 0.5))


def _layer_threshold(flat: np.ndarray, k: int) -> tuple[np.float64, int]:
    """The k-th smallest |w| of `flat` and how many elements equal to it must be zeroed (k >= 1)."""
    magnitudes = np.abs(flat)
    magnitudes.partition(k - 1)
    threshold = np.float64(magnitudes[k - 1])
    np.abs(flat, out=magnitudes)
    return threshold, k - int(np.count_nonzero(magnitudes < threshold))


def _zero_smallest(flat: np.ndarray, threshold: np.float64, ties: int) -> int:
    """Zero every |w| < threshold and the first `ties` elements equal to it; return the ties used."""
    magnitudes = np.abs(flat)
    mask = magnitudes < threshold  # a float64 scalar: fp16 values compare exactly, no rounding
    used = 0
    if ties > 0:
        equal = np.flatnonzero(magnitudes == threshold)[:ties]
        mask[equal] = True
        used = len(equal)
    del magnitudes
    flat[mask] = 0
    return used


def _zero_pattern(w: np.ndarray, layout: Layout, n: int, m: int) -> int:
    """Keep the n largest |w| of every m consecutive weights along K; return the elements left dense."""
    rows = _to_rows(w, layout)
    count, k = rows.shape
    full = k - k % m
    if full and n < m:
        step = max(1, _CHUNK // full)
        for r0 in range(0, count, step):
            block = rows[r0 : r0 + step, :full]
            groups = np.ascontiguousarray(block).reshape(-1, m)
            order = np.argsort(np.abs(groups), axis=1, kind="stable")  # ties: the earlier weight goes first
            np.put_along_axis(groups, order[:, : m - n], 0, axis=1)
            rows[r0 : r0 + step, :full] = groups.reshape(block.shape)
        if not np.shares_memory(rows, w):
            w[...] = _from_rows(rows, layout, w.shape)
    return count * (k % m)


def _magnitude_keys(tensors: Sequence[onnx.TensorProto]) -> Iterator[np.ndarray]:
    """|w| of every tensor as order-preserving uint64 keys (float64 bits), a bounded chunk at a time."""
    for tensor in tensors:
        flat = numpy_helper.to_array(tensor).reshape(-1)  # read-only, usually a view of raw_data
        for start in range(0, flat.size, _CHUNK):
            yield np.abs(flat[start : start + _CHUNK]).astype(np.float64).view(np.uint64)


def _global_threshold(tensors: Sequence[onnx.TensorProto], k: int) -> tuple[np.float64, int]:
    """The k-th smallest |w| over all `tensors` and how many elements equal to it must be zeroed.

    A radix selection on the float64 bit patterns of |w| (which sort like the values, NaN last): a few
    read-only passes, each holding one chunk of one weight, instead of concatenating every weight.
    """
    rank, prefix, bits = k - 1, 0, 0
    while bits < 64:
        hist = np.zeros(1 << 16, dtype=np.int64)
        shift = np.uint64(64 - bits - 16)
        for keys in _magnitude_keys(tensors):
            if bits:
                keys = keys[(keys >> np.uint64(64 - bits)) == np.uint64(prefix)]
            hist += np.bincount(((keys >> shift) & np.uint64(0xFFFF)).astype(np.intp), minlength=1 << 16)
        below = np.cumsum(hist)
        digit = int(np.searchsorted(below, rank, side="right"))
        rank -= int(below[digit - 1]) if digit else 0
        prefix, bits = (prefix << 16) | digit, bits + 16
        if bits < 64 and hist[digit] <= _GATHER_LIMIT:
            top = np.uint64(64 - bits)
            candidates = np.concatenate(
                [keys[(keys >> top) == np.uint64(prefix)] for keys in _magnitude_keys(tensors)]
            )
            candidates.partition(rank)
            key = candidates[rank]
            rank -= int(np.count_nonzero(candidates < key))
            prefix, bits = int(key), 64
    threshold = np.array([prefix], dtype=np.uint64).view(np.float64)[0]
    return threshold, rank + 1


def _decode(tensor: onnx.TensorProto) -> np.ndarray:
    """A writable copy of one weight (the read-only view on the tensor's bytes is dropped at once)."""
    view = numpy_helper.to_array(tensor)
    w = view.copy()
    del view
    return w


# The fields of a TensorProto that hold its values; everything else (name, dims, type ...) is metadata.
_DATA_FIELDS = frozenset(
    ("float_data", "int32_data", "string_data", "int64_data", "raw_data", "double_data", "uint64_data",
     "external_data", "data_location", "segment")
)


def _is_repeated(fd) -> bool:
    flag = getattr(fd, "is_repeated", None)
    return flag if flag is not None else fd.label == fd.LABEL_REPEATED


def _copy_fields(dst, src, *, skip=frozenset(), only=None) -> None:
    """Copy the fields of message `src` into `dst`, leaving out `skip` (or copying `only` those)."""
    for fd, value in src.ListFields():
        if fd.name in skip or (only is not None and fd.name not in only):
            continue
        if _is_repeated(fd):
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _copy_without_weights(model: onnx.ModelProto, holders: dict[str, str]) -> tuple[onnx.ModelProto, dict]:
    """Copy `model` except the values of the weights in `holders` (source name -> "init" or "const").

    Returns the copy and, per source, its TensorProto in the copy (name, dims and type set, no values).
    Why not CopyFrom the whole model and overwrite: the upb protobuf runtime keeps every value it ever
    held in the message's arena, so overwriting a weight would hold both its old and new bytes.
    """
    out = onnx.ModelProto()
    _copy_fields(out, model, skip={"graph"})
    _copy_fields(out.graph, model.graph, skip={"node", "initializer"})
    slots: dict[str, onnx.TensorProto] = {}
    for node in model.graph.node:
        dst = out.graph.node.add()
        source = node.output[0] if node.output else ""
        if holders.get(source) != "const" or node.op_type != "Constant" or node.domain not in _DEFAULT_DOMAINS:
            dst.CopyFrom(node)
            continue
        _copy_fields(dst, node, skip={"attribute"})
        for attr in node.attribute:
            new = dst.attribute.add()
            if attr.name == "value":
                _copy_fields(new, attr, skip={"t"})
                _copy_fields(new.t, attr.t, skip=_DATA_FIELDS)
                slots[source] = new.t
            else:
                new.CopyFrom(attr)
    for tensor in model.graph.initializer:
        dst = out.graph.initializer.add()
        if holders.get(tensor.name) == "init":
            _copy_fields(dst, tensor, skip=_DATA_FIELDS)
            slots[tensor.name] = dst
        else:
            dst.CopyFrom(tensor)
    return out, slots


def _store(dst: onnx.TensorProto, w: np.ndarray) -> None:
    """Write `w` into the (value-less) copy `dst` as raw little-endian bytes."""
    dst.raw_data = w.astype(w.dtype.newbyteorder("<"), copy=False).tobytes()


# ---------------------------------------------------------------------------------------------- API


def prune_unstructured(
    model: onnx.ModelProto,
    sparsity: float,
    *,
    scope: str = "layer",
    pattern: Optional[tuple[int, int]] = None,
    exclude: Sequence[str] = (),
) -> tuple[onnx.ModelProto, UnstructuredReport]:
    """Zero the smallest-magnitude weights of Conv/ConvTranspose/Gemm/MatMul and LSTM/GRU/RNN (W, R); return (copy, report).

    The input model is never mutated. The result is one copy: every node and constant is copied with
    ``CopyFrom`` except the values of the eligible weights, which are zeroed one weight at a time and
    written into the copy once. Peak memory is the input, one copy of the weights, and the temporaries
    of the largest weight (a few times its size).
    Shapes, names, data types (float32, float16, float64) and every non-weight constant are unchanged.

    sparsity: the fraction of each weight's elements (``scope="layer"``) or of all eligible elements
        (``scope="global"``) that end up zero, in [0, 1). The count is ``floor(sparsity * n + 0.5)``;
        zeros already present count towards it (a weight that is already sparser is left as it is).
    scope: ``"layer"`` zeroes each weight to `sparsity` on its own; ``"global"`` uses one magnitude
        threshold over all eligible weights. Equal magnitudes at the threshold are broken in graph order
        and then flat index order, so exactly ``floor(sparsity * total + 0.5)`` elements end up zero
        (unless more were zero already). ``report.threshold`` holds the magnitude.
    pattern: ``(N, M)``, e.g. ``(2, 4)``: in every M consecutive weights along the reduction (input)
        axis, keep the N of largest magnitude (ties: the earlier one is zeroed first) and zero the rest.
        The axis is the flattened ``Cin/g * k...`` axis of each Conv output channel (ConvTranspose: the
        same per output channel of each group), K of Gemm/MatMul (``transB`` honoured; a constant
        MatMul A is ``[..., M, K]``). When K is not a multiple of M the last ``K % M`` weights of every
        row stay dense; ``dense_remainder`` reports how many. With a pattern, `sparsity` must equal
        ``1 - N/M`` (to within 0.005, so 0.5 for 2:4) -- pass exactly that when the user gave only the
        pattern -- otherwise OptionError. A pattern needs ``scope="layer"``; ``"global"`` raises.
    exclude: fnmatch globs (case-sensitive) on node names; an unnamed node is matched as
        ``"<OpType>_<index>"`` (the names inspect and structured prune use). A weight shared with an excluded node is left alone.

    Weights are skipped (listed in ``report.skipped`` with a reason) when they are not float16/32/64
    (int8 behind DequantizeLinear, integer MatMul, bfloat16 ...), not constant, also read by something
    that is not a weight slot (a bias, a graph output, a subgraph), stored in external data that was not
    loaded, or (with a pattern) shared by nodes that reduce along different axes.
    Only the top-level graph is pruned: nodes inside If/Loop/Scan bodies, and weights they read, are not.
    If no weight is eligible the copy is returned unchanged with an empty ``report.layers``.

    Raises OptionError (one-line message) for a sparsity outside [0, 1), an unknown scope, a malformed
    pattern, or a pattern that contradicts `sparsity` or the scope.
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto, got {type(model).__name__}")
    target = _check_sparsity(sparsity)
    if scope not in SCOPES:
        raise OptionError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if pattern is not None:
        n, m = _check_pattern(pattern)
        pattern = (n, m)
        implied = 1.0 - n / m
        if abs(target - implied) > PATTERN_TOLERANCE:
            raise OptionError(
                f"pattern {n}:{m} means sparsity {implied:.4g}, but {target:.4g} was given; "
                "pass the matching value or leave it out", params=("pattern", "sparsity"),
            )
        if scope != "layer":
            raise OptionError(
                f"pattern {n}:{m} keeps {n} of every {m} weights within each layer, so scope 'global' (one ranking "
                "across layers) does not apply: drop the global scope, or give sparsity alone for a global ranking",
                params=("pattern", "scope", "sparsity"),
            )
        target = implied
    globs = exclude_patterns(exclude)

    report = UnstructuredReport(sparsity=target, scope=scope, pattern=pattern, exclude=globs)
    index = _GraphIndex(model.graph)  # read-only: the input model is never written to
    candidates, skipped = _find_weights(index)

    eligible: list[tuple[_Weight, Optional[Layout]]] = []
    for weight in candidates:
        reason, layout = _check_weight(weight, index, globs, pattern is not None)
        if reason:
            skipped.append((weight.uses[0].index, SkippedWeight(weight.labels, weight.source, reason)))
        else:
            eligible.append((weight, layout))
    report.skipped = [skip for _, skip in sorted(skipped, key=lambda pair: pair[0])]
    report.warnings = unmatched_excludes(globs, [label for w in candidates for label in w.labels], "weight layer")

    threshold, ties = None, 0
    if scope == "global" and eligible:
        k = _target_count(target, sum(_elements(w.tensor) for w, _ in eligible))
        if k:
            threshold, ties = _global_threshold([w.tensor for w, _ in eligible], k)
            report.threshold = float(threshold)

    holders = {w.source: "const" if w.source in index.producer else "init" for w, _ in eligible}
    pruned, slots = _copy_without_weights(model, holders)
    for weight, layout in eligible:
        tensor = weight.tensor
        w = _decode(tensor)
        zeros_before = int(np.count_nonzero(w == 0))
        remainder = 0
        if pattern is not None:
            remainder = _zero_pattern(w, layout, *pattern)
        elif scope == "layer":
            k = _target_count(target, w.size)
            if k > zeros_before:
                layer_threshold, layer_ties = _layer_threshold(w.reshape(-1), k)
                _zero_smallest(w.reshape(-1), layer_threshold, layer_ties)
        elif threshold is not None:
            ties -= _zero_smallest(w.reshape(-1), threshold, ties)
        zeros_after = int(np.count_nonzero(w == 0))
        if zeros_after != zeros_before:
            _store(slots[weight.source], w)
        else:  # untouched: keep the original storage, bit for bit
            _copy_fields(slots[weight.source], tensor, only=_DATA_FIELDS)
        report.layers.append(
            LayerSparsity(
                nodes=weight.labels,
                weight=weight.source,
                shape=tuple(int(d) for d in w.shape),
                dtype=w.dtype.name,
                elements=int(w.size),
                zeros_before=zeros_before,
                zeros_after=zeros_after,
                dense_remainder=remainder,
            )
        )
        del w
    return pruned, report


def _elements(tensor: onnx.TensorProto) -> int:
    return math.prod(tensor.dims)


def _check_weight(
    weight: _Weight, index: _GraphIndex, globs: tuple[str, ...], with_pattern: bool
) -> tuple[Optional[str], Optional[Layout]]:
    """(reason to skip, None) or (None, layout) for one weight and all its uses."""
    labels = weight.labels
    excluded = {label: glob for label in labels for glob in globs if fnmatch.fnmatchcase(label, glob)}
    if excluded:
        label, glob = next(iter(excluded.items()))
        if len(excluded) == len(labels):
            return f"excluded by {glob!r}", None
        return f"shared with excluded node {label} (excluded by {glob!r})", None
    others = index.other_uses(weight.source, {(use.index, use.input_index) for use in weight.uses})
    if others:
        return f"also read as {others[0]}, not only as a weight", None
    tensor = index.constant_tensor(weight.source)
    if isinstance(tensor, str):
        return tensor, None
    if tensor.data_type not in _FLOAT_TYPES:
        dtype = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
        return f"{dtype} weight: only float16, float32 and float64 weights are zeroed", None
    if uses_external_data(tensor):
        return "the weight is in external data that was not loaded (use onnxprune.io.load_model)", None
    if tensor.HasField("segment"):
        return "the weight is stored in segments", None
    shape = tuple(int(d) for d in tensor.dims)
    if math.prod(shape) == 0:
        return "empty weight", None
    weight.tensor = tensor
    if not with_pattern:
        return None, None
    layouts = {_layout(use, shape) for use in weight.uses}
    problems = [layout for layout in layouts if isinstance(layout, str)]
    if problems:
        return problems[0], None
    if len(layouts) > 1:
        return "shared by nodes that reduce along different axes; an N:M pattern cannot suit both", None
    return None, layouts.pop()
