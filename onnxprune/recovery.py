"""Training-free recovery of a pruned model from calibration data (docs/recovery.md says what it won).

The layers it refits are the pruned model's Conv (group 1), Gemm and MatMul nodes with a constant weight that
either read removed channels or sit downstream of one that did, and LSTM/GRU/RNN nodes (least squares on the input
part of their gates, W x + Wb; their recurrence R is kept). Methods:

- "bias": each layer that read removed channels gets their mean contribution on the dense model
  (mean patch of the removed inputs x their weights) folded into its bias; a bias is added where there is
  none. A removed channel that is constant on the data is thereby removed exactly.
- "lsq": sequential layer-wise least squares. Layers are visited in depth order; each is re-solved so that,
  fed with the pruned model's current activations, it reproduces the dense layer's output (kept channels)
  on the calibration data: ridge regression in float64 normal equations, lambda = alpha * mean diag(X^T X),
  an unregularized bias, alpha picked from ALPHAS on a held-out quarter of the samples, Conv patches
  sampled so that memory stays bounded. A refit that does not lower the layer's reconstruction error is
  not applied, so "lsq" never makes a layer's calibration error worse than no recovery.
- "stats": each layer's output mean and standard deviation per channel are matched to the dense model's
  (BatchNormalization folded into the Conv, the usual export); where a BatchNormalization node is still in
  the graph and its input changed, its running mean and variance are re-estimated on the pruned model.
- "all": "lsq" then "stats". Least squares fits its bias freely, so it already does what "bias" does.

Everything streams: X^T X, X^T Y and the output moments are accumulated batch by batch, one depth level of
layers at a time (one calibration pass per level).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .activations import ChannelStats, session, tap, walk
from .calib import SampleSet
from .deps.context import Analysis
from .deps.ops.recurrent import GATES as RECURRENT_GATES
from .errors import OptionError
from .graph import Graph, attr, set_attr

METHODS = ("none", "bias", "lsq", "stats", "all")
ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1)
ROWS_PER_LAYER = 30_000
HOLDOUT_EVERY = 4  # every 4th sample is held out to choose alpha
NOT_A_LAYER = "its weight is not a constant"
CONSTANT_INPUT = "its input is a constant"
Progress = Optional[Callable[[int, int], None]]  # (samples done over all passes, total)


@dataclass
class LayerResult:
    node: str
    step: str  # "bias" | "lsq" | "stats" | "bn"
    error_before: Optional[float] = None  # relative squared error of the layer's output vs dense, calibration rows
    error_after: Optional[float] = None
    alpha: Optional[float] = None
    note: str = ""


@dataclass
class RecoveryReport:
    method: str
    samples: int
    passes: int = 0
    seconds: float = 0.0
    layers: list[LayerResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (node, why it was not refit)

    def to_dict(self) -> dict:
        return {
            "method": self.method, "samples": self.samples, "passes": self.passes, "seconds": round(self.seconds, 3),
            "layers": [asdict(layer) for layer in self.layers],
            "skipped": [{"node": n, "reason": r} for n, r in self.skipped],
        }

    def summary(self) -> str:
        refit = [r for r in self.layers if r.error_before is not None and r.error_after is not None]
        text = (f"recovery {self.method}: {len(self.layers)} layer step(s) on {self.samples} calibration samples, "
                f"{self.passes} pass(es), {self.seconds:.1f} s")
        if refit:
            before = np.median([r.error_before for r in refit])
            after = np.median([r.error_after for r in refit])
            text += f"; median layer error vs dense {before:.4f} -> {after:.4f}"
        if self.skipped:
            text += (f"; {len(self.skipped)} layer(s) that read changed activations not refit "
                     f"({self.skipped[0][1]}, ...)")
        return text


def check_method(method: str) -> None:
    if method not in METHODS:
        raise OptionError(f"recover must be one of {', '.join(METHODS)}, got {method!r}")


# ---------------------------------------------------------------------------------------------------------------
# Layers: how a Conv / Gemm / MatMul turns activations into rows X and outputs into rows Y, and its weights
# into theta = [W; b] of shape [features + 1, outputs]. A recurrent layer (LSTM, GRU, RNN) is refit on the input
# part of its gates, W x + Wb (every direction's gate rows are outputs); R, the recurrence, is left as it is.


@dataclass
class Layer:
    node: onnx.NodeProto  # in the pruned model
    kind: str  # "conv" | "gemm" | "matmul" | "recurrent"
    root: str  # the weight's root constant
    out_kept: np.ndarray  # dense output channels the pruned layer keeps
    removed_in: Optional[np.ndarray] = None  # dense input positions removed (layers that read removed channels)
    kernel: tuple = ()  # Conv: the weight's spatial shape

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def x(self) -> str:
        return self.node.input[0]

    @property
    def y(self) -> str:
        return self.node.output[0]

    @property
    def channel_axis(self) -> int:
        return 1 if self.kind == "conv" else -1

    # ---- rows ------------------------------------------------------------------------------------------------
    def rows(self, x: np.ndarray, y: Optional[np.ndarray], per_sample: int, rng) -> tuple:
        """(X rows, Y rows or None, sample index of each row within the batch)."""
        if self.kind == "conv":
            return self._conv_rows(x, y, per_sample, rng)
        xr = x.reshape(-1, x.shape[-1])
        rows_per_sample = int(np.prod(x.shape[1:-1])) if x.ndim > 2 else 1
        take = _pick(xr.shape[0], per_sample * (xr.shape[0] // rows_per_sample), rng)
        yr = None if y is None else y.reshape(-1, y.shape[-1])[take][:, self.out_kept]
        return xr[take], yr, take // rows_per_sample

    def _conv_rows(self, x, y, per_sample, rng):
        kernel, strides, dilations, begin, end, out = conv_geometry(self.node, x.shape, self.kernel)
        spatial = int(np.prod(out))
        take = _pick(x.shape[0] * spatial, per_sample * x.shape[0], rng)
        batch_idx, flat = np.divmod(take, spatial)
        pos = np.stack(np.unravel_index(flat, out), axis=1) if out else np.zeros((len(take), 0), int)
        xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(begin, end)))
        nd = len(kernel)
        index = [batch_idx.reshape((-1,) + (1,) * (nd + 1)), np.arange(x.shape[1]).reshape((1, -1) + (1,) * nd)]
        for d in range(nd):
            coord = pos[:, d:d + 1] * strides[d] + np.arange(kernel[d])[None, :] * dilations[d]
            shape = [len(take), 1] + [1] * nd
            shape[2 + d] = kernel[d]
            index.append(coord.reshape(shape))
        patches = xp[tuple(index)].reshape(len(take), -1)
        yr = None if y is None else _gather_y(y, batch_idx, pos)[:, self.out_kept]
        return patches, yr, batch_idx

    # ---- weights ---------------------------------------------------------------------------------------------
    def theta(self, graph: Graph) -> np.ndarray:
        w = graph.value(self.root).astype(np.float64)
        if self.kind == "conv":
            wm = w.reshape(w.shape[0], -1).T
        elif self.kind == "gemm":
            wm = (w.T if attr(self.node, "transB", 0) else w) * float(attr(self.node, "alpha", 1.0))
        elif self.kind == "recurrent":  # every direction's gate rows read the same x: [in, dirs * gates*H]
            wm = w.transpose(2, 0, 1).reshape(w.shape[2], -1)
        else:
            wm = w
        return np.vstack([wm, self.bias(graph)[None, :]])

    def bias(self, graph: Graph) -> np.ndarray:
        n = self.width(graph)
        if self.kind == "conv" and len(self.node.input) > 2 and self.node.input[2]:
            return graph.value(self.node.input[2]).astype(np.float64).reshape(-1)
        if self.kind == "gemm" and len(self.node.input) > 2 and self.node.input[2]:
            c = graph.value(self.node.input[2]).astype(np.float64)
            return np.broadcast_to(c.reshape(-1), (n,)) * float(attr(self.node, "beta", 1.0))
        if self.kind == "recurrent" and len(self.node.input) > 3 and self.node.input[3]:
            b = graph.value(self.node.input[3]).astype(np.float64)  # [dirs, 2 * gates*H]: W's biases, then R's
            return b[:, :b.shape[1] // 2].reshape(-1)
        return np.zeros(n)  # MatMul: theta's bias is a shift added to the bias Add after it (or a new one)

    def width(self, graph: Graph) -> int:
        return out_width(graph, self.node)

    def write(self, graph: Graph, theta: np.ndarray) -> None:
        proto = graph.root_proto(self.root)
        old = numpy_helper.to_array(proto)
        wm, b = theta[:-1], theta[-1]
        if self.kind == "conv":
            w = wm.T.reshape(old.shape)
        elif self.kind == "gemm":
            w = wm / float(attr(self.node, "alpha", 1.0))
            w = w.T if attr(self.node, "transB", 0) else w
        elif self.kind == "recurrent":
            w = wm.reshape(old.shape[2], old.shape[0], old.shape[1]).transpose(1, 2, 0)
        else:
            w = wm
        proto.CopyFrom(numpy_helper.from_array(w.astype(old.dtype), proto.name))
        self._write_bias(graph, b, old.dtype)

    def _write_bias(self, graph: Graph, b: np.ndarray, dtype) -> None:
        node = self.node
        if self.kind == "recurrent":
            dirs = graph.const_shape(node.input[1])[0]
            has_b = len(node.input) > 3 and node.input[3]
            full = graph.value(node.input[3]).copy() if has_b else np.zeros((dirs, 2 * b.size // dirs), dtype)
            full[:, :full.shape[1] // 2] = b.reshape(dirs, -1)  # W's half; R's half stays
            while len(node.input) < 4:
                node.input.append("")
            _set_input(graph, node, 3, full)
            return
        if self.kind == "matmul":
            if not np.any(b):
                return
            add = _bias_add(graph, node)
            if add is not None:
                add_node, index = add
                current = graph.value(add_node.input[index])
                _set_input(graph, add_node, index, (current + b.reshape(current.shape)).astype(current.dtype))
                return
            inner = f"{node.output[0]}__unbiased"
            graph.graph.node.insert(list(graph.graph.node).index(node) + 1, helper.make_node(
                "Add", [inner, ""], [node.output[0]], name=f"{node.name}__recovery_bias"))
            new = graph.graph.node[list(graph.graph.node).index(node) + 1]
            node.output[0] = inner
            _set_input(graph, new, 1, b.astype(dtype))
            return
        if self.kind == "gemm":
            beta = float(attr(node, "beta", 1.0))
            if beta == 0.0:
                set_attr(node, "beta", 1.0)
                beta = 1.0
            b = b / beta
        index = 2
        if len(node.input) > index and node.input[index]:
            dtype = graph.value(node.input[index]).dtype
        _set_input(graph, node, index, b.astype(dtype))


def out_width(graph: Graph, node: onnx.NodeProto) -> int:
    """Output features of a Conv, Gemm or MatMul, from its weight's shape (a recurrent layer's: its gate rows of
    every direction, what W x computes)."""
    shape = graph.const_shape(node.input[1])
    return shape[0] * shape[1] if node.op_type in RECURRENT_GATES else shape[_out_axis(node)]


def _gather_y(y, batch_idx, pos):
    index = (batch_idx[:, None], np.arange(y.shape[1])[None, :], *[pos[:, d:d + 1] for d in range(pos.shape[1])])
    return y[index]


def _pick(available: int, wanted: int, rng) -> np.ndarray:
    if wanted >= available:
        return np.arange(available)
    return np.sort(rng.choice(available, size=wanted, replace=False))


def conv_geometry(node: onnx.NodeProto, x_shape, kernel) -> tuple:
    """kernel, strides, dilations, pads at the start and end of each spatial axis, and the output size."""
    spatial_in = list(x_shape[2:])
    nd = len(spatial_in)
    kernel = list(kernel)
    strides = list(attr(node, "strides", [1] * nd) or [1] * nd)
    dilations = list(attr(node, "dilations", [1] * nd) or [1] * nd)
    pads = list(attr(node, "pads", [0] * (2 * nd)) or [0] * (2 * nd))
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    begin, end, out = [], [], []
    for d in range(nd):
        span = (kernel[d] - 1) * dilations[d] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-spatial_in[d] // strides[d])
            total = max(0, (o - 1) * strides[d] + span - spatial_in[d])
            b = total // 2 if auto == "SAME_UPPER" else total - total // 2
            e = total - b
        elif auto == "VALID":
            b = e = 0
            o = (spatial_in[d] - span) // strides[d] + 1
        else:
            b, e = pads[d], pads[d + nd]
            o = (spatial_in[d] + b + e - span) // strides[d] + 1
        begin.append(b)
        end.append(max(e, (o - 1) * strides[d] + span - spatial_in[d] - b, 0))
        out.append(o)
    return kernel, strides, dilations, begin, end, tuple(out)


def _bias_add(graph: Graph, node: onnx.NodeProto):
    """The Add that adds a constant bias [N] to this MatMul's output (its only reader), and the bias's input index."""
    readers = graph.consumers.get(node.output[0], [])
    if len(readers) != 1 or readers[0][0].op_type != "Add":
        return None
    add, index = readers[0]
    other = 1 - index
    value = graph.value(add.input[other])
    if value is None or value.ndim < 1 or value.size != value.shape[-1]:
        return None
    if sum(1 for n in graph.graph.node for i in n.input if graph.constant_root(i) == graph.constant_root(add.input[other])) > 1:
        return None
    return add, other


def _set_input(graph: Graph, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    graph.set_constant_input(node, index, value, f"{node.name}__recovered_{index}")


# ---------------------------------------------------------------------------------------------------------------
# Which layers, in which order


def _eligible(graph: Graph, node: onnx.NodeProto, uses: dict[str, int]) -> Optional[str]:
    """None when the layer can be refit, else why not."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "Gemm", "MatMul", *RECURRENT_GATES):
        return "not a Conv, Gemm or MatMul"
    if len(node.input) < 2 or graph.constant_root(node.input[1]) is None:
        return NOT_A_LAYER
    if graph.constant_root(node.input[0]) is not None:
        return CONSTANT_INPUT
    root = graph.constant_root(node.input[1])
    if uses.get(root, 0) > 1:
        return "its weight is shared with another node"
    shape = graph.const_shape(node.input[1])
    if node.op_type == "Conv" and int(attr(node, "group", 1)) != 1:
        return "grouped convolution"
    if node.op_type == "MatMul" and len(shape) != 2:
        return "its weight is not 2-D"
    if node.op_type in RECURRENT_GATES:
        if len(shape) != 3 or int(attr(node, "layout", 0)) != 0:
            return f"{node.op_type} with a weight that is not [dirs, gates*H, in] or batch-first layout"
        if len(node.input) > 3 and node.input[3] and graph.value(node.input[3]) is None:
            return "its bias B is not a constant"
    if node.op_type == "Gemm":
        if attr(node, "transA", 0):
            return "Gemm with transA"
        if len(node.input) > 2 and node.input[2]:
            c = graph.value(node.input[2])
            n = shape[0] if attr(node, "transB", 0) else shape[1]
            if c is None or c.size not in (1, n):
                return "its bias C is not one value per output"
    if graph.value(node.input[1]).dtype.kind != "f":
        return "its weight is not floating point"
    return None


def _weight_uses(graph: Graph) -> dict[str, int]:
    uses: dict[str, int] = {}
    for node in graph.graph.node:
        for name in node.input:
            root = graph.constant_root(name) if name else None
            if root is not None:
                uses[root] = uses.get(root, 0) + 1
    return uses


def _kept_outputs(analysis: Analysis, keep) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for place in analysis.places:
        if place.role == "out":
            out[(place.root, place.axis)] = analysis.spaces.positions(place.layout, keep)
    return out


def _out_axis(node: onnx.NodeProto) -> int:
    if node.op_type in RECURRENT_GATES:
        return 1
    if node.op_type == "Gemm":
        return 0 if attr(node, "transB", 0) else 1
    return 0 if node.op_type == "Conv" else 1


def _in_axis(node: onnx.NodeProto) -> int:
    if node.op_type in RECURRENT_GATES:
        return 2
    if node.op_type == "Gemm":
        return 1 if attr(node, "transB", 0) else 0
    return 1 if node.op_type == "Conv" else 0


def plan_layers(pruned: onnx.ModelProto, analysis: Analysis, keep, removed: dict, steps: set[str],
                report: RecoveryReport):
    """Levels of recovery targets in `pruned`: each level is a list of Layers and BatchNormalization nodes whose
    inputs depend only on earlier levels. Also returns the layers that read removed channels, and `pruned`'s
    Graph."""
    graph = Graph(pruned)
    uses = _weight_uses(graph)
    kept_out = _kept_outputs(analysis, keep)
    readers = {place.node for place in analysis.places if place.role == "in" and (place.root, place.axis) in removed}
    changed: set[str] = set()
    depth: dict[str, int] = {}
    levels: list[list] = []
    seeds: list[Layer] = []
    for node in graph.graph.node:
        d = max((depth.get(i, 0) for i in node.input if i), default=0)
        is_reader = node.name in readers
        touched = is_reader or any(i in changed for i in node.input if i)
        target = None
        recurrent = node.op_type in RECURRENT_GATES
        if touched and recurrent and "lsq" not in steps:
            report.skipped.append((node.name, f"{node.op_type} layers are refit by least squares only"))
        elif touched and (node.op_type in ("Conv", "Gemm", "MatMul") or recurrent):
            why = _eligible(graph, node, uses)
            if why is None:
                root = graph.constant_root(node.input[1])
                positions = kept_out.get((root, _out_axis(node)))
                if positions is None:
                    positions = np.arange(out_width(graph, node))
                elif recurrent:  # kept gate rows of one direction -> columns of every direction in W x
                    dirs, rows = analysis.graph.const_shape(node.input[1])[:2]
                    positions = np.concatenate([d * rows + positions for d in range(dirs)])
                layer = Layer(node, _kind(node), root, positions, removed.get((root, _in_axis(node))),
                              tuple(graph.const_shape(node.input[1])[2:]))
                if is_reader and layer.removed_in is not None:
                    seeds.append(layer)
                target = layer
            elif why not in (NOT_A_LAYER, CONSTANT_INPUT):  # activation x activation products are not layers
                report.skipped.append((node.name, why))
        elif touched and "stats" in steps and node.op_type == "BatchNormalization" and _bn_constant(graph, node):
            target = node
        if target is not None and (steps - {"bias"}):
            while len(levels) <= d:
                levels.append([])
            levels[d].append(target)
            d += 1
        if touched:
            changed.update(o for o in node.output if o)
        for o in node.output:
            if o:
                depth[o] = d
    return [level for level in levels if level], seeds, graph


def _kind(node: onnx.NodeProto) -> str:
    return "recurrent" if node.op_type in RECURRENT_GATES else {"Conv": "conv", "Gemm": "gemm", "MatMul": "matmul"}[node.op_type]


def _bn_constant(graph: Graph, node: onnx.NodeProto) -> bool:
    return len(node.input) >= 5 and all(graph.constant_root(i) is not None for i in node.input[1:5]) and len(node.output) == 1


# ---------------------------------------------------------------------------------------------------------------
# Moments and solves


class Moments:
    """X~^T X~, X~^T Y and sum of Y^2 per output, for X~ = [X, 1], kept separately for fit and held-out rows."""

    def __init__(self) -> None:
        self.xx: list = [None, None]
        self.xy: list = [None, None]
        self.yy: list = [None, None]

    def add(self, x: np.ndarray, y: np.ndarray, part: int) -> None:
        if x.shape[0] == 0:
            return
        xa = np.empty((x.shape[0], x.shape[1] + 1), np.float64)
        xa[:, :-1] = x
        xa[:, -1] = 1.0
        y = np.asarray(y, np.float64)
        parts = (xa.T @ xa, xa.T @ y, (y * y).sum(0))
        for store, value in zip((self.xx, self.xy, self.yy), parts):
            store[part] = value if store[part] is None else store[part] + value

    def total(self):
        idx = [p for p in (0, 1) if self.xx[p] is not None]
        return tuple(sum(store[p] for p in idx) for store in (self.xx, self.xy, self.yy))

    @property
    def has_holdout(self) -> bool:
        return self.xx[0] is not None and self.xx[1] is not None


def error(theta: np.ndarray, xx: np.ndarray, xy: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Squared error per output column of X~ theta against Y, from the moments alone."""
    return np.einsum("fo,fo->o", theta, xx @ theta) - 2.0 * np.einsum("fo,fo->o", theta, xy) + yy


def ridge(xx: np.ndarray, xy: np.ndarray, alpha: float) -> np.ndarray:
    f = xx.shape[0] - 1
    a = xx.copy()
    diag = np.diag(xx)[:f]
    lam = alpha * float(np.mean(diag)) if f else 0.0
    a[np.arange(f), np.arange(f)] += max(lam, 1e-12)
    try:
        return np.linalg.solve(a, xy)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, xy, rcond=None)[0]


def refit(m: Moments, old: np.ndarray, alpha: Optional[float]) -> tuple[np.ndarray, Optional[float], str]:
    """Least squares with the alpha that does best on held-out rows; the old theta where nothing beats it."""
    xx, xy, yy = m.total()
    chosen = alpha
    if chosen is None:
        if m.has_holdout:
            scores = [float(error(ridge(m.xx[0], m.xy[0], a), m.xx[1], m.xy[1], m.yy[1]).sum()) for a in ALPHAS]
            chosen = ALPHAS[int(np.argmin(scores))]
            if min(scores) >= float(error(old, m.xx[1], m.xy[1], m.yy[1]).sum()):
                return old, chosen, "kept: no refit lowered the held-out error"
        else:
            chosen = 1e-3
    theta = ridge(xx, xy, chosen)
    if error(theta, xx, xy, yy).sum() > error(old, xx, xy, yy).sum():
        return old, chosen, "kept: the refit did not lower the calibration error"
    return theta, chosen, ""


def match_moments(m: Moments, theta: np.ndarray) -> np.ndarray:
    """theta with each output's calibration mean and standard deviation matched to the dense layer's."""
    xx, xy, yy = m.total()
    n = xx[-1, -1]
    mean_p = (xx[-1] @ theta) / n
    sq_p = np.einsum("fo,fo->o", theta, xx @ theta) / n
    var_p = np.maximum(sq_p - mean_p ** 2, 0.0)
    mean_d = xy[-1] / n
    var_d = np.maximum(yy / n - mean_d ** 2, 0.0)
    return _rescaled(theta, mean_p, var_p, mean_d, var_d)


def _rescaled(theta: np.ndarray, mean_p, var_p, mean_d, var_d) -> np.ndarray:
    """theta scaled and shifted per output: mean mean_p and variance var_p become mean_d and var_d."""
    scale = np.where(var_p > 1e-12 * np.maximum(var_d, 1e-30), np.sqrt(var_d / np.maximum(var_p, 1e-300)), 1.0)
    out = theta * scale[None, :]
    out[-1] += mean_d - scale * mean_p
    return out


def _relative(err: np.ndarray, yy: np.ndarray) -> float:
    return float(err.sum() / max(float(yy.sum()), 1e-30))


# ---------------------------------------------------------------------------------------------------------------
# The passes


def recover(
    pruned: onnx.ModelProto,
    analysis: Analysis,
    keep,
    removed: dict,
    samples: SampleSet,
    method: str = "all",
    *,
    alpha: Optional[float] = None,
    rows: int = ROWS_PER_LAYER,
    seed: int = 0,
    progress: Progress = None,
) -> RecoveryReport:
    """Recover `pruned` in place towards the dense model on `samples`: `pruned` is the rewrite of `analysis` (whose
    model, the dense one, is read and not changed) with `keep`; `removed` is oracle.removed_reads of the same."""
    check_method(method)
    report = RecoveryReport(method, samples.count)
    if method == "none":
        return report
    started = time.perf_counter()
    steps = {"all": {"lsq", "stats"}}.get(method, {method})
    levels, seeds, graph = plan_layers(pruned, analysis, keep, removed, steps, report)
    dense = analysis.graph.model
    passes = (1 if "bias" in steps and seeds else 0) + len(levels)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], passes * samples.count)

    per_sample = max(1, math.ceil(rows / max(1, samples.count)))
    rng = np.random.default_rng(seed)
    if "bias" in steps and seeds:
        _bias_pass(dense, graph, seeds, samples, per_sample, rng, report, tick)
        report.passes += 1
    for level in levels:
        _level_pass(dense, graph, level, steps, samples, per_sample, rng, alpha, report, tick)
        report.passes += 1
    report.seconds = time.perf_counter() - started
    return report


def _bias_pass(dense, graph, seeds, samples, per_sample, rng, report, tick) -> None:
    dgraph = Graph(dense)
    sums = {layer.name: [None, 0] for layer in seeds}
    names = [layer.x for layer in seeds]
    sd = session(tap(dense, names))

    def fold(_feed, results):
        for layer in seeds:
            x, _, _ = _dense_view(layer, dgraph).rows(results[0][layer.x], None, per_sample, rng)
            acc = sums[layer.name]
            s = x.astype(np.float64).sum(0)
            acc[0] = s if acc[0] is None else acc[0] + s
            acc[1] += x.shape[0]

    walk([sd], samples, None, fold, tick)
    for layer in seeds:
        total, count = sums[layer.name]
        dense_layer = _dense_view(layer, dgraph)
        theta_d = dense_layer.theta(dgraph)
        feature_of = _features_of_inputs(layer, dgraph)
        removed = np.concatenate([feature_of[i] for i in layer.removed_in])
        shift = (total[removed] / max(count, 1)) @ theta_d[removed][:, layer.out_kept]
        theta = layer.theta(graph)
        theta[-1] += shift
        layer.write(graph, theta)
        report.layers.append(LayerResult(layer.name, "bias", note="removed inputs' mean folded into the bias"))


def _dense_view(layer: Layer, dgraph: Graph) -> Layer:
    node = dgraph.node_by_name(layer.name)
    return Layer(node, layer.kind, layer.root, np.arange(out_width(dgraph, node)), kernel=layer.kernel)


def _features_of_inputs(layer: Layer, dgraph: Graph) -> list[np.ndarray]:
    """For each input channel of the dense layer, its feature rows in X (Conv: channel-major patches)."""
    shape = dgraph.const_shape(layer.node.input[1])
    if layer.kind == "conv":
        per = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        return [np.arange(c * per, (c + 1) * per) for c in range(shape[1])]
    k = shape[_in_axis(layer.node)]
    return [np.array([c]) for c in range(k)]


def _level_pass(dense, graph, level, steps, samples, per_sample, rng, alpha, report, tick) -> None:
    layers = [t for t in level if isinstance(t, Layer)]
    norms = [t for t in level if not isinstance(t, Layer)]
    fit = "lsq" in steps
    moments = {layer.name: Moments() for layer in layers}
    outputs = {layer.name: (ChannelStats(layer.channel_axis), ChannelStats(layer.channel_axis)) for layer in layers}
    bn_stats = {node.name: ChannelStats(1) for node in norms}
    # least squares needs each layer's input; statistics matching alone needs only its output
    p_names = [layer.x if fit else layer.y for layer in layers] + [node.input[0] for node in norms]
    d_names = [layer.x if layer.kind == "recurrent" else layer.y for layer in layers]  # no tensor holds W x
    recurrent = [layer for layer in layers if layer.kind == "recurrent"]
    dgraph = Graph(dense) if recurrent else None
    dense_theta = {layer.name: _dense_view(layer, dgraph).theta(dgraph) for layer in recurrent}
    sessions = [session(tap(graph.model, p_names))]
    if d_names:
        sessions.append(session(tap(dense, d_names)))
    offset = [0]

    def fold(_feed, results):
        pruned_out = results[0]
        dense_out = results[1] if len(results) > 1 else {}
        for layer in layers:
            if fit:
                if layer.kind == "recurrent":
                    xd = dense_out[layer.x]
                    theta_d = dense_theta[layer.name]
                    y = (xd.reshape(-1, xd.shape[-1]) @ theta_d[:-1] + theta_d[-1]).reshape(*xd.shape[:-1], -1)
                else:
                    y = dense_out[layer.y]
                x, y, sample = layer.rows(pruned_out[layer.x], y, per_sample, rng)
                held = (offset[0] + sample) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
                m = moments[layer.name]
                m.add(x[~held], y[~held], 0)
                m.add(x[held], y[held], 1)
            else:
                mine, theirs = outputs[layer.name]
                mine.add(pruned_out[layer.y])
                theirs.add(np.take(dense_out[layer.y], layer.out_kept, axis=layer.channel_axis))
        for node in norms:
            bn_stats[node.name].add(pruned_out[node.input[0]])
        first = next(iter(pruned_out.values()))
        offset[0] += first.shape[0] if first.ndim else 1

    walk(sessions, samples, None, fold, tick)
    for layer in layers:
        old = layer.theta(graph)
        if not fit:
            if not _feeds_batchnorm(graph, layer.node):
                layer.write(graph, _affine(old, *outputs[layer.name]))
                report.layers.append(LayerResult(layer.name, "stats", note="output mean and spread matched to dense"))
            continue
        m = moments[layer.name]
        xx, xy, yy = m.total()
        before = _relative(error(old, xx, xy, yy), yy)
        theta, chosen, note = refit(m, old, alpha)
        if "stats" in steps and not _feeds_batchnorm(graph, layer.node):
            theta = match_moments(m, theta)
        if theta is not old:
            layer.write(graph, theta)
        after = _relative(error(theta, xx, xy, yy), yy)
        report.layers.append(LayerResult(layer.name, "lsq", before, after, chosen, note))
    for node in norms:
        stats = bn_stats[node.name]
        eps = float(attr(node, "epsilon", 1e-5))
        var = np.maximum(stats.variance - eps, 0.0)  # BatchNormalization divides by sqrt(var + eps)
        for index, value in ((3, stats.mean), (4, var)):
            old = graph.value(node.input[index])
            _set_input(graph, node, index, value.astype(old.dtype).reshape(old.shape))
        report.layers.append(LayerResult(node.name, "bn", note="running mean and variance re-estimated"))


def _affine(theta: np.ndarray, pruned: ChannelStats, dense: ChannelStats) -> np.ndarray:
    """theta scaled and shifted per output so that its mean and standard deviation become the dense ones."""
    return _rescaled(theta, pruned.mean, pruned.variance, dense.mean, dense.variance)


def _feeds_batchnorm(graph: Graph, node: onnx.NodeProto) -> bool:
    readers = graph.consumers.get(node.output[0], [])
    return len(readers) == 1 and readers[0][0].op_type == "BatchNormalization"
