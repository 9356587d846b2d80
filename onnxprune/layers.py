"""Where the time went: per-layer kernel time of a dense and a pruned model on onnxruntime's CPU provider.

A whole-model speedup below the MAC reduction has two possible causes, and this module tells them apart:
- slow layers: a layer's time falls less than its own MACs (misaligned channels, memory-bound kernels);
- mixing: every layer keeps pace with its own MACs, but the layers whose MACs fell least (depthwise convs, the
  first conv, the classifier, convs next to a channel group kept whole, ops without MACs) hold a bigger share of
  the time than of the MACs, so the time falls less than the MAC total.
The "ideal" speedup is the one the pruned model would reach if every layer's time fell exactly with its own MACs
(layers without MACs keep their measured time ratio); efficiency against it isolates the first cause.

Times come from onnxruntime's profiler, one session at a time, with the benchmark's session options: `warmup`
runs, then `runs` profiled runs, the median kernel time per node. onnxruntime profiles its optimized graph, so
each profiled node is mapped back to the original node it came from (what onnxruntime 1.31 does):
- fused nodes keep the first node's name (Conv+Relu -> FusedConv), sometimes with a "/...Fusion" suffix
  ("fc/MatMul/MatMulAddFusion" for MatMul+Add -> Gemm, ".../MatMulScaleFusion/", "ln/Mul/LayerNormFusion/");
- NCHWc convolutions and pools are named after their output tensor, or after the last node fused in, plus
  "_nchwc"; after Conv+BatchNormalization (+activation, bias or residual Add, the Transposes of an NHWC export)
  fusion that is the last fused node, so the name is walked back to the Conv;
- nodes onnxruntime creates (ReorderInput/ReorderOutput, BiasGelu, Gelu, the Reshapes around a fused Gemm) map
  to no original node: they are reported as "(onnxruntime-inserted)", one row per kernel type.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import re
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Collection, Mapping, Optional, Sequence

import numpy as np
import onnx

from .bench import BenchReport, session_options, shapes_for_batch
from .cost import count_cost
from .errors import OnnxPruneError, OptionError
from .graph import node_names
from .inputs import Feed, counting_shapes, make_inputs
from .io import ModelSource, load_model
from .session import open_session, run_session, source_label
from .tables import markdown, num, plain, shorten

INSERTED = "(onnxruntime-inserted)"
KERNEL_SUFFIX = "_kernel_time"
NCHWC_SUFFIX = "_nchwc"
_GENERATED_SUFFIXES = (re.compile(r"_token_\d+$"), re.compile(r"/\w*Fusion/?$"))
CONV_KERNELS = frozenset({"Conv", "FusedConv"})
CONTROL_FLOW = frozenset({"Loop", "If", "Scan"})  # kernels whose time includes their body's nodes
# ops onnxruntime folds into the Conv before them (or moves out of the way, as the Transposes of NHWC exports);
# an NCHWc Conv is named after the last one, or its output
FOLDED_INTO_CONV = frozenset({"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh",
                              "Add", "Sub", "Mul", "Div", "Transpose", "Cast", "Identity"})
FOLD_WALK_STEPS = 12
UNCHANGED = 0.95  # a layer whose MACs kept at least this fraction counts as unpruned
WITH_THE_MODEL = 1.05  # a layer's MAC ratio up to this times the model's counts as falling with the model
KEPT_PACE = 0.9  # efficiency against the per-layer ideal from which the layers are said to keep pace


# ---------------------------------------------------------------------------------------------------------------
# Profiling


@dataclass
class KernelTime:
    op: str  # the kernel onnxruntime ran (Conv, FusedConv, Gemm, ReorderOutput ...)
    ms: float  # median over the profiled runs


def read_profile(events: Sequence[Mapping], skip: Collection[int] = ()) -> dict[str, KernelTime]:
    """Median kernel time per profiled node over the runs of an onnxruntime profile, leaving out the runs whose
    index (0 = the session's first run) is in `skip`.

    A node's times within one run are summed (a node run many times counts its total); a run it skipped counts 0.
    The nodes of a Loop's, If's or Scan's body are left out: their time is inside that node's own.
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                  and e.get("name") == "model_run")
    starts = [start for start, _ in runs]
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(KERNEL_SUFFIX)]
    bodies = sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels
                    if e.get("args", {}).get("op_name") in CONTROL_FLOW)
    body_starts = [start for start, _ in bodies]
    reach = list(itertools.accumulate((end for _, end in bodies), max))  # the latest end among bodies begun so far
    per_run: list[dict[str, float]] = [defaultdict(float) for _ in runs]
    ops: dict[str, str] = {}
    for e in kernels:
        name = e["name"]
        # control-flow nodes begun before this one (at the same microsecond too, unless it is one itself)
        begun = bisect.bisect_left if e.get("args", {}).get("op_name") in CONTROL_FLOW else bisect.bisect_right
        k = begun(body_starts, e["ts"]) - 1
        if k >= 0 and e["ts"] + e["dur"] <= reach[k]:
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i < 0 or e["ts"] > runs[i][1]:
            continue
        node = name[: -len(KERNEL_SUFFIX)]
        per_run[i][node] += e["dur"] / 1000.0
        ops.setdefault(node, e.get("args", {}).get("op_name", "?"))
    skipped = set(skip)
    kept = [r for i, r in enumerate(per_run) if i not in skipped]
    return {
        node: KernelTime(op, float(np.median([r.get(node, 0.0) for r in kept])))
        for node, op in ops.items()
        if any(node in r for r in kept)
    }


def profile(sources: Sequence[ModelSource], feed: Feed, *, threads: int = 1, warmup: int = 5, runs: int = 20,
            rounds: int = 5, providers: Sequence = ("CPUExecutionProvider",)) -> list[dict[str, KernelTime]]:
    """Kernel time per node of onnxruntime's optimized graph, for each of `sources` on the same feed.

    Like the benchmark, the sessions take turns in blocks, so that a slow spell of the machine hits every model:
    `warmup` untimed runs each, then `rounds` rounds in which every session does one untimed run and its share
    of the `runs` profiled runs. Each node's time is the median over its profiled runs.
    """
    per_visit = max(1, math.ceil(runs / max(rounds, 1)))
    with tempfile.TemporaryDirectory(prefix="onnxprune-layers-") as folder:
        sessions, labels = [], []
        for k, source in enumerate(sources):
            options = session_options(threads)
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(folder, f"profile{k}")
            sessions.append(open_session(source, options, providers))
            labels.append(source_label(source))
        untimed: list[list[int]] = [list(range(warmup)) for _ in sessions]  # run indices left out, per session
        done = [warmup] * len(sessions)
        for session, label in zip(sessions, labels):
            for _ in range(warmup):
                run_session(session, feed, label)
        left = runs
        while left > 0:
            block = min(per_visit, left)
            for k, (session, label) in enumerate(zip(sessions, labels)):
                untimed[k].append(done[k])
                for _ in range(1 + block):
                    run_session(session, feed, label)
                done[k] += 1 + block
            left -= block
        out = []
        for session, skip in zip(sessions, untimed):
            with open(session.end_profiling(), encoding="utf-8") as f:
                out.append(read_profile(json.load(f), skip=skip))
        del sessions
    return out


# ---------------------------------------------------------------------------------------------------------------
# Mapping profiled nodes to the original graph


class _Index:
    """The original graph's nodes by name (as onnxprune names them) and by the tensor they produce."""

    def __init__(self, model: onnx.ModelProto):
        nodes = model.graph.node
        self.op = {name: n.op_type for name, n in zip(node_names(nodes), nodes)}
        constants = {t.name for t in model.graph.initializer} | {
            out for n in nodes if n.op_type == "Constant" for out in n.output}
        self.data_inputs = {name: [i for i in n.input if i and i not in constants] for name, n in zip(self.op, nodes)}
        self.producer = {out: name for name, n in zip(self.op, nodes) for out in n.output if out}

    def resolve(self, profiled: str, kernel: str) -> Optional[str]:
        """The original node a profiled node comes from, or None for a node onnxruntime made up."""
        if profiled in self.op:
            return profiled
        name = profiled
        for pattern in _GENERATED_SUFFIXES:
            name = pattern.sub("", name)
        if name.endswith(NCHWC_SUFFIX):  # named after the output tensor, or after the last node fused in
            base = name[: -len(NCHWC_SUFFIX)]
            node = self.producer.get(base, base if base in self.op else None)
        else:
            node = name if name in self.op else None
        if node is not None and kernel in CONV_KERNELS:
            node = self._conv_before(node)
        return node

    def _conv_before(self, node: str) -> str:
        """The Conv that `node` (a BatchNormalization, activation, bias or residual Add ... after it) was folded
        into: walked back through such ops, preferring an input a Conv produced where there are two."""
        current: Optional[str] = node
        for _ in range(FOLD_WALK_STEPS):
            if current is None or self.op[current] not in FOLDED_INTO_CONV:
                break
            sources = [self.producer.get(i) for i in self.data_inputs[current]]
            convs = [p for p in sources if p is not None and self.op[p] == "Conv"]
            current = convs[0] if len(convs) == 1 else sources[0] if len(sources) == 1 else None
        return current if current is not None and self.op[current] == "Conv" else node


def named_for_profiling(source: ModelSource, proto: onnx.ModelProto) -> ModelSource:
    """`source` itself when every node has the unique name reports use, else a copy with those names."""
    names = node_names(proto.graph.node)
    if all(n.name == name for n, name in zip(proto.graph.node, names)):
        return source
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for node, name in zip(copy.graph.node, names):
        node.name = name
    return copy


@dataclass
class Layer:
    """One original node (or one kind of onnxruntime-inserted node) of one model, with its profiled time."""
    name: str
    op_type: str
    ms: float = 0.0
    kernels: set[str] = field(default_factory=set)


@dataclass
class ModelLayers:
    label: str
    layers: dict[tuple[str, str], Layer]  # by (name, op_type), in execution order
    macs: dict[str, int]  # per original node
    total_macs: Optional[int]  # whole model; None when it could not be counted


def model_layers(model: onnx.ModelProto, times: Mapping[str, KernelTime], shapes: Mapping[str, Sequence[int]],
                 label: str = "model") -> ModelLayers:
    """Profiled times attributed to `model`'s own nodes, and their MACs at `shapes`."""
    index = _Index(model)
    layers: dict[tuple[str, str], Layer] = {}
    for profiled, t in times.items():
        node = index.resolve(profiled, t.op)
        key = (node, index.op[node]) if node is not None else (INSERTED, t.op)
        layer = layers.setdefault(key, Layer(*key))
        layer.ms += t.ms
        layer.kernels.add(t.op)
    try:
        cost = count_cost(model, shapes)
    except OnnxPruneError:
        return ModelLayers(label, layers, {}, None)
    return ModelLayers(label, layers, {name: c.macs for name, c in cost.per_node.items()}, cost.macs)


# ---------------------------------------------------------------------------------------------------------------
# The comparison


def _ratio(part: Optional[float], whole: Optional[float]) -> Optional[float]:
    return part / whole if part is not None and whole else None


@dataclass
class LayerRow:
    name: str
    op_type: str  # of the original node; for an onnxruntime-inserted row, the kernel
    kernel: str  # what onnxruntime ran ("+"-joined when several)
    dense_ms: Optional[float]  # None: the layer does not run in that model
    pruned_ms: Optional[float]
    dense_macs: int = 0
    pruned_macs: int = 0

    @property
    def time_ratio(self) -> Optional[float]:
        return _ratio(self.pruned_ms, self.dense_ms)

    @property
    def mac_ratio(self) -> Optional[float]:
        """Pruned MACs / dense MACs; None for a layer without dense MACs."""
        return self.pruned_macs / self.dense_macs if self.dense_macs else None

    @property
    def ideal_ms(self) -> float:
        """The pruned time if this layer's time fell exactly with its MACs (else its measured pruned time)."""
        if self.mac_ratio is None:
            return self.pruned_ms or 0.0
        return (self.dense_ms or 0.0) * self.mac_ratio

    def to_dict(self) -> dict:
        return {**asdict(self), "time_ratio": self.time_ratio, "mac_ratio": self.mac_ratio, "ideal_ms": self.ideal_ms}


@dataclass
class Bucket:
    """Layers grouped by how far their MACs fell, against the whole model's MAC ratio."""
    label: str
    layers: int
    dense_time_share: float
    dense_mac_share: float
    time_ratio: Optional[float]
    mac_ratio: Optional[float]


BUCKETS = ("MACs fell with the model or more", "MACs fell less than the model", "MACs unchanged", "no MACs")


@dataclass
class LayerReport:
    rows: list[LayerRow]
    dense_macs: Optional[int]  # whole models, as the benchmark counts them
    pruned_macs: Optional[int]
    dense: str = "dense"
    pruned: str = "pruned"
    threads: Optional[int] = None
    batch: Optional[int] = None
    runs: Optional[int] = None

    @property
    def dense_ms(self) -> float:
        return sum(r.dense_ms or 0.0 for r in self.rows)

    @property
    def pruned_ms(self) -> float:
        return sum(r.pruned_ms or 0.0 for r in self.rows)

    @property
    def ideal_ms(self) -> float:
        return sum(r.ideal_ms for r in self.rows)

    @property
    def speedup(self) -> Optional[float]:
        """Measured: the sum of the dense kernel times over the sum of the pruned ones."""
        return _ratio(self.dense_ms, self.pruned_ms)

    @property
    def ideal_speedup(self) -> Optional[float]:
        return _ratio(self.dense_ms, self.ideal_ms)

    @property
    def mac_ratio(self) -> Optional[float]:
        return _ratio(self.pruned_macs, self.dense_macs)

    @property
    def mac_efficiency(self) -> Optional[float]:
        """speedup / (1 / MAC ratio), as the benchmark reports it."""
        return self.speedup * self.mac_ratio if self.speedup is not None and self.mac_ratio is not None else None

    @property
    def ideal_efficiency(self) -> Optional[float]:
        """speedup / ideal speedup: 1.0 when every layer's time fell with its own MACs."""
        return _ratio(self.ideal_ms, self.pruned_ms)

    @property
    def spread_efficiency(self) -> Optional[float]:
        """ideal speedup / (1 / MAC ratio): below 1.0 when the layers whose MACs fell least hold more of the time
        than of the MACs. mac_efficiency = spread_efficiency x ideal_efficiency."""
        return self.ideal_speedup * self.mac_ratio if self.ideal_speedup is not None and self.mac_ratio else None

    def bucket_of(self, row: LayerRow) -> str:
        r, model = row.mac_ratio, self.mac_ratio
        if r is None:
            return BUCKETS[3]
        if r >= UNCHANGED:
            return BUCKETS[2]
        return BUCKETS[0] if model is None or r <= model * WITH_THE_MODEL else BUCKETS[1]

    def buckets(self) -> list[Bucket]:
        members: dict[str, list[LayerRow]] = defaultdict(list)
        for r in self.rows:
            members[self.bucket_of(r)].append(r)
        total_macs = sum(r.dense_macs for r in self.rows)
        out = []
        for label in BUCKETS:
            rows = members.get(label)
            if not rows:
                continue
            dense_ms, dense_macs = sum(r.dense_ms or 0.0 for r in rows), sum(r.dense_macs for r in rows)
            out.append(Bucket(
                label, len(rows), _ratio(dense_ms, self.dense_ms) or 0.0, _ratio(dense_macs, total_macs) or 0.0,
                _ratio(sum(r.pruned_ms or 0.0 for r in rows), dense_ms),
                _ratio(sum(r.pruned_macs for r in rows), dense_macs),
            ))
        return out

    def summary(self) -> list[str]:
        """Two sentences: how the time is spread against the MACs, and whether the layers kept pace with theirs."""
        lines = []
        if self.spread_efficiency is not None:
            slow = [b for b in self.buckets() if b.label != BUCKETS[0]]
            lines.append(f"The layers whose MACs fell less than the model's x{self.mac_ratio:.3f}, or have none, hold "
                         f"{sum(b.dense_time_share for b in slow):.0%} of the dense time against "
                         f"{sum(b.dense_mac_share for b in slow):.0%} of the dense MACs: even if every layer's time fell with its own MACs, the model "
                         f"would reach {self.ideal_speedup:.2f}x of the {1 / self.mac_ratio:.2f}x the MAC count "
                         f"promises ({self.spread_efficiency:.2f} of it).")
        if self.speedup is not None and self.ideal_efficiency is not None:
            verdict = (
                "the layers kept pace with their own MACs"
                if self.ideal_efficiency >= KEPT_PACE
                else "the layers themselves fell short of their own MACs (rows whose time ratio is well above their "
                     "MAC ratio show where)"
            )
            lines.append(f"Measured {self.speedup:.2f}x is {self.ideal_efficiency:.2f} of that ideal: {verdict}.")
        return lines

    def to_dict(self) -> dict:
        return {
            "dense": self.dense, "pruned": self.pruned, "threads": self.threads, "batch": self.batch,
            "runs": self.runs, "dense_ms": self.dense_ms, "pruned_ms": self.pruned_ms, "ideal_ms": self.ideal_ms,
            "speedup": self.speedup, "ideal_speedup": self.ideal_speedup, "dense_macs": self.dense_macs,
            "pruned_macs": self.pruned_macs, "mac_ratio": self.mac_ratio, "mac_efficiency": self.mac_efficiency,
            "spread_efficiency": self.spread_efficiency, "ideal_efficiency": self.ideal_efficiency, "buckets": [asdict(b) for b in self.buckets()],
            "summary": self.summary(), "rows": [r.to_dict() for r in self.rows],
        }


def layer_report(dense: ModelLayers, pruned: ModelLayers) -> LayerReport:
    """Row by row comparison; a layer found in one model only gets None for the other's time (and 0 MACs)."""
    rows = []
    for key in dict.fromkeys([*dense.layers, *pruned.layers]):
        d, p = dense.layers.get(key), pruned.layers.get(key)
        name, op_type = key
        kernels = (d.kernels if d else set()) | (p.kernels if p else set())
        rows.append(LayerRow(
            name, op_type, "+".join(sorted(kernels)), d.ms if d else None, p.ms if p else None,
            dense.macs.get(name, 0), pruned.macs.get(name, 0),
        ))
    return LayerReport(rows, dense.total_macs, pruned.total_macs, dense.label, pruned.label)


def compare_layers(
    dense: ModelSource,
    pruned: ModelSource,
    *,
    threads: int = 1,
    batch: Optional[int] = None,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    warmup: int = 5,
    runs: int = 20,
    rounds: int = 5,
    seed: int = 0,
    labels: Sequence[str] = (),
    progress: Optional[Callable[[str], None]] = None,
) -> LayerReport:
    """Profile `dense` and `pruned` taking turns (see `profile`), on the same seeded inputs (the dense model's, at
    `batch`), and compare them."""
    if runs < 1 or warmup < 0:
        raise OptionError(f"profiling needs at least 1 run and no negative warm-up, got {runs} and {warmup}")
    say = progress or (lambda _msg: None)
    labels = list(labels) or [source_label(dense, "dense"), source_label(pruned, "pruned")]
    dense_proto = load_model(dense)
    input_shapes = (shapes_for_batch(dense_proto, dict(shapes or {}), batch) if batch
                    else counting_shapes(dense_proto, shapes)[0])
    feed = make_inputs(dense_proto, input_shapes, samples=1, seed=seed)[0]

    protos = [dense_proto, load_model(pruned)]
    say(f"layers: profiling {labels[0]} and {labels[1]} ({threads} thread(s), {warmup} + {runs} runs each)")
    times = profile([named_for_profiling(src, proto) for src, proto in zip((dense, pruned), protos)], feed,
                    threads=threads, warmup=warmup, runs=runs, rounds=rounds)
    report = layer_report(*(model_layers(proto, t, input_shapes, label)
                            for proto, t, label in zip(protos, times, labels)))
    report.threads, report.batch, report.runs = threads, batch, runs
    return report


# ---------------------------------------------------------------------------------------------------------------
# After a benchmark


@dataclass
class LayerGroup:
    """The per-layer comparisons of one provider x threads x batch group of a benchmark."""
    provider: str
    threads: int
    batch: int
    reports: list[LayerReport] = field(default_factory=list)
    note: str = ""

    def title(self) -> str:
        return f"per-layer time: {self.provider}, {self.threads} thread{'s' if self.threads != 1 else ''}, " \
               f"batch {self.batch}"

    def to_dict(self) -> dict:
        return {"provider": self.provider, "threads": self.threads, "batch": self.batch, "note": self.note,
                "reports": [r.to_dict() for r in self.reports]}


def bench_layers(models: Sequence[ModelSource], report: BenchReport,
                 progress: Optional[Callable[[str], None]] = None) -> list[LayerGroup]:
    """For every group of `report`, the first model against each other one (not the control), profiled with the
    benchmark's warm-up, shapes and seed and as many runs as it timed per model."""
    cfg = report.config
    groups = []
    for (provider, threads, batch), rows in report.groups():
        group = LayerGroup(provider, threads, batch)
        groups.append(group)
        if provider != "cpu":
            group.note = f"not measured on {provider}: the per-layer comparison uses onnxruntime's CPU profiler only"
            continue
        labels = [r.model for r in rows if not r.control]
        for source, label in zip(models[1:], labels[1:]):
            group.reports.append(compare_layers(
                models[0], source, threads=threads, batch=batch, shapes=cfg.shapes, warmup=cfg.warmup,
                runs=cfg.runs * cfg.rounds, rounds=cfg.rounds, seed=cfg.seed, labels=(labels[0], label), progress=progress,
            ))
    return groups


# ---------------------------------------------------------------------------------------------------------------
# Formatting


LAYER_HEADER = ["layer", "op", "kernel", "dense ms", "dense %", "pruned ms", "time ratio", "MAC ratio"]
BUCKET_HEADER = ["MAC-ratio bucket", "layers", "dense time", "dense MACs", "time ratio", "MAC ratio"]


def _layer_cells(report: LayerReport, top: int) -> list[list[str]]:
    ranked = sorted(report.rows, key=lambda r: (r.dense_ms or 0.0, r.pruned_ms or 0.0), reverse=True)
    shown, rest = ranked[:top], ranked[top:]
    total = report.dense_ms
    cells = [[shorten(r.name), r.op_type, r.kernel, num(r.dense_ms, ".3f"), num(_ratio(r.dense_ms, total), ".1%"),
              num(r.pruned_ms, ".3f"), num(r.time_ratio, ".3f"), num(r.mac_ratio, ".3f")] for r in shown]
    if rest:
        rest_dense, rest_pruned = sum(r.dense_ms or 0.0 for r in rest), sum(r.pruned_ms or 0.0 for r in rest)
        cells.append([f"({len(rest)} more layers)", "", "", f"{rest_dense:.3f}", num(_ratio(rest_dense, total), ".1%"),
                      f"{rest_pruned:.3f}", num(_ratio(rest_pruned, rest_dense), ".3f"), ""])
    cells.append(["total (kernel time)", "", "", f"{report.dense_ms:.3f}", "100.0%", f"{report.pruned_ms:.3f}",
                  num(_ratio(report.pruned_ms, report.dense_ms), ".3f"), num(report.mac_ratio, ".3f")])
    return cells


def _bucket_cells(report: LayerReport) -> list[list[str]]:
    return [[b.label, str(b.layers), f"{b.dense_time_share:.1%}", f"{b.dense_mac_share:.1%}", num(b.time_ratio, ".3f"),
             num(b.mac_ratio, ".3f")] for b in report.buckets()]


def _totals_lines(report: LayerReport) -> list[str]:
    promise = _ratio(1.0, report.mac_ratio)
    return [
        f"measured speedup {num(report.speedup, '.2f')}x (sum of kernel times); MACs x{num(report.mac_ratio, '.3f')} "
        f"promise {num(promise, '.2f')}x: MAC efficiency {num(report.mac_efficiency, '.2f')}",
        f"per-layer ideal {num(report.ideal_speedup, '.2f')}x (each layer's time falling with its own MACs): "
        f"efficiency against it {num(report.ideal_efficiency, '.2f')}",
        f"MAC efficiency {num(report.mac_efficiency, '.2f')} = {num(report.spread_efficiency, '.2f')} (time spread unlike "
        f"MACs: ideal / promise) x {num(report.ideal_efficiency, '.2f')} (layers against their own MACs)",
    ]


def _heading(report: LayerReport) -> str:
    return f"{report.dense} vs {report.pruned} (median of {report.runs} profiled runs per layer)"


def format_report(report: LayerReport, top: int = 15) -> str:
    """A plain-text table of the `top` layers by dense time, the rest in one line, then where the time went."""
    lines = [_heading(report)]
    lines += plain([LAYER_HEADER] + _layer_cells(report, top), range(3))
    lines.append("")
    lines += plain([BUCKET_HEADER] + _bucket_cells(report), (0,))
    lines += _totals_lines(report) + report.summary()
    lines.append("-: the layer does not run in that model. Profiled kernel times leave out the time between "
                 "kernels: take the model's latency from the benchmark.")
    return "\n".join(lines)


def format_report_markdown(report: LayerReport, top: int = 15) -> str:
    lines = [f"**{_heading(report)}**", ""]
    lines += markdown(LAYER_HEADER, _layer_cells(report, top), range(3)) + [""]
    lines += markdown(BUCKET_HEADER, _bucket_cells(report), (0,)) + [""]
    lines += [f"{line}  " for line in _totals_lines(report)] + [" ".join(report.summary()), ""]
    return "\n".join(lines)


def format_groups(groups: Sequence[LayerGroup], top: int = 15, markdown: bool = False) -> str:
    """Every group's comparisons (or why it has none), as plain text or Markdown."""
    lines = []
    for g in groups:
        lines += [f"### {g.title()}", ""] if markdown else [f"== {g.title()}"]
        if g.note:
            lines.append(g.note)
        lines += [format_report_markdown(r, top) if markdown else format_report(r, top) for r in g.reports]
        lines.append("")
    return "\n".join(lines)
