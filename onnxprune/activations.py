"""Intermediate activations through onnxruntime, with statistics kept streaming.

`tap(model, names)` is a copy of the model cut down to what computes `names` (onnxruntime runs every node of
a session whatever outputs are fetched, so the cut saves the work past the deepest tapped tensor), with
those tensors as its outputs. `walk(...)` runs it batch by batch and hands each batch's tapped arrays to a
callback, which folds them into running sums and lets them go: no more than one batch of the tapped
tensors is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import onnx
import onnxruntime as ort

from .calib import SampleSet, feed_rows
from .errors import OnnxPruneError
from .graph import subgraph_outer_names
from .inputs import Feed

Progress = Optional[Callable[[int], None]]  # called with the number of samples just processed
ACTIVATION_BUDGET = 256 << 20  # bytes of tapped tensors per batch, which sets the batch size


def tap(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """The part of `model` that computes `names`, with exactly those tensors as graph outputs."""
    names = list(dict.fromkeys(names))
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    needed, stack, wanted_nodes = set(), list(names), set()
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        i = producer.get(name)
        if i is None:
            continue
        wanted_nodes.add(i)
        node = graph.node[i]
        stack.extend(n for n in node.input if n)
        stack.extend(subgraph_outer_names(node))
    cut = onnx.ModelProto()
    for field_name in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(cut, field_name, getattr(model, field_name))
    cut.opset_import.extend(model.opset_import)
    cut.functions.extend(model.functions)
    g = cut.graph
    g.name = graph.name
    g.node.extend(graph.node[i] for i in sorted(wanted_nodes))
    g.initializer.extend(t for t in graph.initializer if t.name in needed)
    init_names = {t.name for t in graph.initializer}
    g.input.extend(vi for vi in graph.input if vi.name not in init_names)
    types = _elem_types(model)
    for name in names:  # onnxruntime infers what the model does not say
        typed = name in types
        g.output.append(onnx.helper.make_tensor_value_info(name, types[name], None) if typed else onnx.ValueInfoProto(name=name))
    return cut


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of every tensor that says one (value_info, inputs, outputs, initializers)."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def session(model: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception classes
        text = str(exc).strip().splitlines()
        raise OnnxPruneError(f"onnxruntime cannot run the calibration pass: {text[0] if text else exc}") from None


def walk(
    sessions: list[ort.InferenceSession],
    samples: SampleSet,
    batch: Optional[int],
    fold: Callable[[Feed, list[dict[str, np.ndarray]]], None],
    progress: Progress = None,
) -> None:
    """Run every session on each batch of `samples`; `fold(feed, [outputs of each session])` takes the results.

    batch None: sized so that one batch of tapped tensors (and their float64 copies) stays within
    ACTIVATION_BUDGET, measured on the first sample.
    """
    if batch is None:
        probe = next(samples.feeds(1))
        tapped = sum(v.nbytes for r in _run_all(sessions, probe) for v in r.values())
        batch = batch_size(3 * tapped // feed_rows(probe))
    for feed in samples.feeds(batch):
        results = _run_all(sessions, feed)
        fold(feed, results)
        del results
        if progress is not None:
            progress(feed_rows(feed))


def _run_all(sessions, feed: Feed) -> list[dict[str, np.ndarray]]:
    results = []
    for s in sessions:
        names = [o.name for o in s.get_outputs()]
        try:
            values = s.run(names, feed)
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise OnnxPruneError(f"onnxruntime failed on the calibration data: {text[0] if text else exc}") from None
        results.append(dict(zip(names, values)))
    return results


def batch_size(per_sample_bytes: int, budget: int = ACTIVATION_BUDGET, most: int = 64) -> int:
    return int(max(1, min(most, budget // max(1, per_sample_bytes))))


@dataclass
class ChannelStats:
    """Running per-channel sums over every other axis: count, sum, sum of squares, sum of absolute values."""

    axis: int
    count: float = 0.0
    total: Optional[np.ndarray] = None
    squares: Optional[np.ndarray] = None
    absolute: Optional[np.ndarray] = None

    def add(self, x: np.ndarray) -> None:
        x = np.moveaxis(np.asarray(x, dtype=np.float64), self.axis, 0)
        x = x.reshape(x.shape[0], -1)
        parts = (x.sum(1), (x * x).sum(1), np.abs(x).sum(1))
        if self.total is None:
            self.total, self.squares, self.absolute = parts
        else:
            self.total += parts[0]
            self.squares += parts[1]
            self.absolute += parts[2]
        self.count += x.shape[1]

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1.0)

    @property
    def variance(self) -> np.ndarray:
        return np.maximum(self.squares / max(self.count, 1.0) - self.mean ** 2, 0.0)

    @property
    def mean_abs(self) -> np.ndarray:
        return self.absolute / max(self.count, 1.0)

    @property
    def norm(self) -> np.ndarray:
        """The L2 norm of each channel over every sample and position (Wanda's ||X||)."""
        return np.sqrt(self.squares)


def channel_stats(
    model: onnx.ModelProto, axes: dict[str, int], samples: SampleSet, progress: Progress = None,
) -> dict[str, ChannelStats]:
    """Per-channel statistics of the tensors `axes` (name -> channel axis) over all of `samples`."""
    stats = {name: ChannelStats(axis) for name, axis in axes.items()}
    if not stats:
        return stats
    s = session(tap(model, list(stats)))

    def fold(_feed, results):
        for name, value in results[0].items():
            stats[name].add(value)

    walk([s], samples, None, fold, progress)
    return stats
