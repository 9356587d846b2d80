"""Dense vs pruned through onnxruntime: per-output error statistics, cosine, top-1 agreement, and gates.

A gate that fails makes `VerifyReport.passed` False; the CLI then exits with VerificationError's code (4).
Each output also reports the tightest gate values it would have passed ("would pass with").
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from .cost import default_input_shapes, model_inputs
from .errors import ModelLoadError, OnnxPruneError, OptionError
from .io import load_model
from .tables import plain

ModelSource = Union[str, os.PathLike, onnx.ModelProto]
Feed = dict[str, np.ndarray]

INT_HIGH = 2  # random integer inputs lie in [0, INT_HIGH): safe for masks, token ids and indices of any size


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def _np_dtype(elem_type: int, name: str) -> np.dtype:
    if elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.BFLOAT16) or elem_type == 0:
        what = "no tensor type" if elem_type == 0 else onnx.TensorProto.DataType.Name(elem_type)
        raise OptionError(f"input {name!r}: cannot make random data for {what}; pass the inputs with --data")
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        raise OptionError(
            f"input {name!r}: cannot make random data for type {elem_type}; pass the inputs with --data"
        ) from None


def _as_proto(model: ModelSource) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else load_model(model)


def make_inputs(
    model: ModelSource,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    samples: int = 1,
    seed: int = 0,
) -> list[Feed]:
    """`samples` feed dicts of random inputs with the model's shapes and dtypes, reproducible from `seed`.

    Floats: standard normal. Integers: uniform in [0, 2) (valid as masks and as token ids of any vocabulary).
    Bools: fair coin. Dynamic dims are 1 unless `shapes` pins them (see cost.default_input_shapes).
    """
    if samples < 1:
        raise OptionError(f"--samples must be at least 1, got {samples}")
    proto = _as_proto(model)
    concrete = default_input_shapes(proto, shapes)
    specs = model_inputs(proto)
    for spec in specs:
        if spec.name not in concrete:
            raise OptionError(f"input {spec.name!r}: the model does not state its shape; pass --shape {spec.name}=...")
    rng = np.random.default_rng(seed)
    feeds: list[Feed] = []
    for _ in range(samples):
        feed: Feed = {}
        for spec in specs:
            dtype = _np_dtype(spec.elem_type, spec.name)
            shape = tuple(concrete[spec.name])
            if dtype.kind == "f":
                arr = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu":
                arr = rng.integers(0, INT_HIGH, size=shape).astype(dtype)
            elif dtype.kind == "b":
                arr = rng.integers(0, 2, size=shape).astype(bool)
            else:
                raise OptionError(f"input {spec.name!r}: cannot make random data of dtype {dtype}; use --data")
            feed[spec.name] = arr
        feeds.append(feed)
    return feeds


def load_inputs_npz(path: Union[str, os.PathLike], model: ModelSource, batch: int = 64) -> list[Feed]:
    """Feed dicts from an .npz holding one array per model input, samples on axis 0 (see calib.py for the two
    forms: along the batch axis, fed `batch` rows at a time, or stacked on a new axis 0, one feed each).

    Raises OptionError for a missing/unreadable file, a missing or unknown input, a wrong dtype or rank,
    a shape that contradicts a fixed dim, or inputs with different sample counts.
    """
    from .calib import load_npz

    return list(load_npz(path, _as_proto(model), option="--data").feeds(batch))


# ---------------------------------------------------------------------------------------------------------------
# Sessions


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def source_label(source: ModelSource, default: str = "model") -> str:
    if isinstance(source, onnx.ModelProto):
        return source.graph.name or default
    return str(source)


def open_session(source: ModelSource, options=None, providers: Sequence = ("CPUExecutionProvider",)):
    """An onnxruntime.InferenceSession from a path or a ModelProto; load failures raise ModelLoadError."""
    import onnxruntime as ort

    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 4
    label = source_label(source)
    if isinstance(source, onnx.ModelProto):
        try:
            payload = source.SerializeToString()
        except ValueError as exc:  # protobuf's 2 GiB limit
            raise ModelLoadError(f"{label}: too large to pass in memory, save it to a file first ({_first_line(exc)})")
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such file")
        payload = str(path)
    try:
        return ort.InferenceSession(payload, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own pybind exception classes
        raise ModelLoadError(f"{label}: onnxruntime cannot load it: {_first_line(exc)}") from None


def run_session(session, feeds: Feed, label: str) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except Exception as exc:
        raise run_failure(session, feeds, label, exc) from None


def _dims_text(dims) -> str:
    return "x".join(str(d) if isinstance(d, int) else (d or "?") for d in dims) or "a scalar"


def feed_mismatch(session, feeds: Feed) -> Optional[str]:
    """Why `feeds` does not fit `session`'s inputs (names, element types, fixed dims), or None when it fits."""
    wanted = session.get_inputs()
    names = [i.name for i in wanted]
    missing = [n for n in names if n not in feeds]
    if missing:
        return f"it takes inputs {names}, but is given {sorted(feeds)}"
    for info in wanted:
        value = np.asarray(feeds[info.name])
        given = f"{_dims_text(value.shape)} {value.dtype}"
        onnx_type = info.type[len("tensor("):-1] if info.type.startswith("tensor(") else info.type
        type_name = {"float": "float32", "double": "float64"}.get(onnx_type, onnx_type)
        expected = f"{_dims_text(info.shape or ())} {type_name}"
        wrong_type = onnx_type != "string" and type_name != str(value.dtype)
        shape = info.shape  # None where the model does not state the rank
        wrong_shape = shape is not None and (
            len(shape) != value.ndim or any(isinstance(d, int) and d != v for d, v in zip(shape, value.shape)))
        if wrong_type or wrong_shape:
            return f"input {info.name!r} is {expected}, but is given {given}"
    return None


def run_failure(session, feeds: Feed, label: str, exc: BaseException, hint: str = "") -> OnnxPruneError:
    """One readable line for a failed run: the input that does not fit when that is the cause (plus `hint`),
    else all of onnxruntime's message on one line (its first line alone often names no index or shape)."""
    mismatch = feed_mismatch(session, feeds)
    if mismatch is not None:
        return OnnxPruneError(f"{label}: {mismatch}" + (f" ({hint})" if hint else ""))
    text = " ".join(str(exc).split()) or type(exc).__name__
    return OnnxPruneError(f"{label}: onnxruntime failed to run: {text}")


# ---------------------------------------------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True)
class Gates:
    min_cosine: Optional[float] = None
    min_top1: Optional[float] = None
    max_abs: Optional[float] = None
    max_accuracy_drop: Optional[float] = None  # dense accuracy minus pruned accuracy, as a fraction (needs labels)

    def validate(self) -> None:
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise OptionError(f"--min-cosine must lie in [-1, 1], got {self.min_cosine}")
        if self.min_top1 is not None and not 0.0 <= self.min_top1 <= 1.0:
            raise OptionError(f"--min-top1 must lie in [0, 1], got {self.min_top1}")
        if self.max_abs is not None and not self.max_abs >= 0.0:
            raise OptionError(f"--max-abs must be >= 0, got {self.max_abs}")
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise OptionError(f"--max-accuracy-drop is a fraction in [0, 1] (0.01 = 1 point), got {self.max_accuracy_drop}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.min_cosine, self.min_top1, self.max_abs, self.max_accuracy_drop))

    def to_dict(self) -> dict:
        return {"min_cosine": self.min_cosine, "min_top1": self.min_top1, "max_abs": self.max_abs,
                "max_accuracy_drop": self.max_accuracy_drop}


@dataclass
class GateFailure:
    output: str
    gate: str  # "min_cosine" | "min_top1" | "max_abs" | "max_accuracy_drop" | "shape"
    value: Optional[float]
    threshold: Optional[float]
    message: str

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "gate": self.gate,
            "value": _json_float(self.value),
            "threshold": self.threshold,
            "message": self.message,
        }


@dataclass
class OutputStats:
    name: str
    shape: list[int]  # the dense output's shape for one sample
    pruned_shape: list[int]
    dtype: str
    max_abs: Optional[float] = None
    mean_abs: Optional[float] = None
    rel: Optional[float] = None  # max abs error / max abs dense value
    cosine: Optional[float] = None  # over all samples, flattened
    top1: Optional[float] = None  # fraction of rows whose argmax agrees, for [N, classes] outputs
    note: str = ""

    @property
    def tolerance(self) -> dict:
        """The tightest gate values this output would have passed."""
        return {"max_abs": self.max_abs, "min_cosine": self.cosine, "min_top1": self.top1}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": self.shape,
            "pruned_shape": self.pruned_shape,
            "dtype": self.dtype,
            "max_abs": _json_float(self.max_abs),
            "mean_abs": _json_float(self.mean_abs),
            "rel": _json_float(self.rel),
            "cosine": _json_float(self.cosine),
            "top1": _json_float(self.top1),
            "would_pass_with": {k: _json_float(v) for k, v in self.tolerance.items()},
            "note": self.note,
        }


@dataclass
class VerifyReport:
    dense: str
    pruned: str
    samples: int
    input_shapes: dict[str, list[int]]
    gates: Gates
    outputs: list[OutputStats] = field(default_factory=list)
    failures: list[GateFailure] = field(default_factory=list)
    accuracy: Optional["Accuracy"] = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "dense": self.dense,
            "pruned": self.pruned,
            "samples": self.samples,
            "input_shapes": self.input_shapes,
            "gates": self.gates.to_dict(),
            "passed": self.passed,
            "failures": [f.to_dict() for f in self.failures],
            "outputs": [o.to_dict() for o in self.outputs],
            "accuracy": None if self.accuracy is None else asdict(self.accuracy),
        }


@dataclass
class Accuracy:
    """Top-1 accuracy of both models against labels, on the first [N, classes] output."""

    output: str
    samples: int
    dense: float
    pruned: float

    @property
    def drop(self) -> float:
        return self.dense - self.pruned


def _json_float(value: Optional[float]):
    """JSON has no NaN/Infinity: write them as strings so the file stays standard."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape == b.shape and np.array_equal(a, b):
        return 1.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not (math.isfinite(na) and math.isfinite(nb)):
        return float("nan")
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(min(1.0, max(-1.0, float(np.dot(a, b)) / (na * nb))))


def _output_stats(name: str, dense: list[np.ndarray], pruned: list[np.ndarray]) -> OutputStats:
    d0, p0 = dense[0], pruned[0]
    stats = OutputStats(name, list(d0.shape), list(p0.shape), str(d0.dtype))
    if any(d.shape != p.shape for d, p in zip(dense, pruned)):
        stats.note = f"shape differs: dense {list(d0.shape)}, pruned {list(p0.shape)}"
        return stats
    a = np.concatenate([np.asarray(d, dtype=np.float64).ravel() for d in dense])
    b = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in pruned])
    if a.size == 0:
        stats.max_abs = stats.mean_abs = stats.rel = 0.0
        stats.cosine = 1.0
        stats.note = "empty output"
        return stats
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(a == b, 0.0, np.abs(a - b))  # equal infinities are no error
        stats.max_abs = float(np.max(err))
        stats.mean_abs = float(np.mean(err))
        dense_max = float(np.max(np.abs(a)))
    if not math.isfinite(stats.max_abs):
        stats.rel = stats.max_abs
    elif dense_max > 0:
        stats.rel = stats.max_abs / dense_max
    else:
        stats.rel = 0.0 if stats.max_abs == 0 else float("inf")
    stats.cosine = _cosine(a, b)
    if d0.ndim == 2 and d0.shape[1] > 1 and d0.dtype.kind == "f":
        top_d = np.concatenate([np.argmax(d, axis=1) for d in dense])
        top_p = np.concatenate([np.argmax(p, axis=1) for p in pruned])
        stats.top1 = float(np.mean(top_d == top_p)) if top_d.size else None
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        stats.note = "non-finite values (NaN/Inf) in " + (
            "both outputs" if not np.isfinite(a).all() and not np.isfinite(b).all()
            else "the dense output" if not np.isfinite(a).all() else "the pruned output"
        )
    return stats


def _check_gates(stats: OutputStats, gates: Gates) -> list[GateFailure]:
    fails = []
    if stats.note.startswith("shape differs"):
        return [GateFailure(stats.name, "shape", None, None, f"output {stats.name!r}: {stats.note}")]
    # written as "not (value passes)" so that NaN fails every gate
    if gates.max_abs is not None and not (stats.max_abs is not None and stats.max_abs <= gates.max_abs):
        fails.append(GateFailure(
            stats.name, "max_abs", stats.max_abs, gates.max_abs,
            f"output {stats.name!r}: max abs error {_fmt(stats.max_abs)} > --max-abs {gates.max_abs:g}",
        ))
    if gates.min_cosine is not None and not (stats.cosine is not None and stats.cosine >= gates.min_cosine):
        fails.append(GateFailure(
            stats.name, "min_cosine", stats.cosine, gates.min_cosine,
            f"output {stats.name!r}: cosine {_fmt_cos(stats.cosine)} < --min-cosine {gates.min_cosine:g}",
        ))
    if gates.min_top1 is not None and stats.top1 is not None and not stats.top1 >= gates.min_top1:
        fails.append(GateFailure(
            stats.name, "min_top1", stats.top1, gates.min_top1,
            f"output {stats.name!r}: top-1 agreement {stats.top1:.4f} < --min-top1 {gates.min_top1:g}",
        ))
    return fails


def compare(
    dense: ModelSource,
    pruned: ModelSource,
    feeds: Sequence[Feed],
    *,
    gates: Gates = Gates(),
    labels: Optional[np.ndarray] = None,
) -> VerifyReport:
    """Run both models on every feed (onnxruntime, CPU) and compare their outputs under `gates`.

    Both models must have the same input and output names (OnnxPruneError otherwise). `--min-top1` with no
    output shaped [N, classes] is an OptionError: a gate that cannot be checked must not pass silently.
    """
    gates.validate()
    if not feeds:
        raise OptionError("no input samples to compare on")
    dense_label, pruned_label = source_label(dense, "dense"), source_label(pruned, "pruned")
    sd, sp = open_session(dense), open_session(pruned)
    d_in, p_in = [i.name for i in sd.get_inputs()], [i.name for i in sp.get_inputs()]
    if sorted(d_in) != sorted(p_in):
        raise OnnxPruneError(f"the models have different inputs: dense {d_in}, pruned {p_in}")
    d_out, p_out = [o.name for o in sd.get_outputs()], [o.name for o in sp.get_outputs()]
    if sorted(d_out) != sorted(p_out):
        raise OnnxPruneError(f"the models have different outputs: dense {d_out}, pruned {p_out}")
    for feed in feeds:
        if sorted(feed) != sorted(d_in):
            raise OptionError(f"the input samples name {sorted(feed)}, the models need {sorted(d_in)}")

    dense_outs: dict[str, list[np.ndarray]] = {n: [] for n in d_out}
    pruned_outs: dict[str, list[np.ndarray]] = {n: [] for n in d_out}
    for feed in feeds:
        for name, value in zip(d_out, run_session(sd, feed, dense_label)):
            dense_outs[name].append(np.asarray(value))
        for name, value in zip(p_out, run_session(sp, feed, pruned_label)):
            pruned_outs[name].append(np.asarray(value))

    report = VerifyReport(
        dense=dense_label,
        pruned=pruned_label,
        samples=len(feeds),
        input_shapes={k: list(np.shape(v)) for k, v in feeds[0].items()},
        gates=gates,
    )
    for name in d_out:
        stats = _output_stats(name, dense_outs[name], pruned_outs[name])
        report.outputs.append(stats)
        report.failures.extend(_check_gates(stats, gates))
    if gates.min_top1 is not None and all(
        o.top1 is None for o in report.outputs if not o.note.startswith("shape differs")
    ):
        raise OptionError("--min-top1 was given but no output is shaped [N, classes] (2-D, classes > 1)")
    if labels is not None:
        report.accuracy = _accuracy(report, dense_outs, pruned_outs, labels)
        drop = report.accuracy.drop
        if gates.max_accuracy_drop is not None and not drop <= gates.max_accuracy_drop + 1e-12:
            report.failures.append(GateFailure(
                report.accuracy.output, "max_accuracy_drop", drop, gates.max_accuracy_drop,
                f"accuracy drop {drop * 100:.2f} points ({report.accuracy.dense:.4f} -> {report.accuracy.pruned:.4f}) "
                f"> --max-accuracy-drop {gates.max_accuracy_drop:g}",
            ))
    elif gates.max_accuracy_drop is not None:
        raise OptionError("--max-accuracy-drop needs --labels")
    return report


def load_labels(path: Union[str, os.PathLike]) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"--labels {p}: no such file")
    try:
        labels = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise OptionError(f"--labels {p}: not a readable .npy file: {_first_line(exc)}") from None
    if not hasattr(labels, "ndim") or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise OptionError(f"--labels {p}: needs a 1-D array of integer class ids, got "
                          f"{getattr(labels, 'dtype', type(labels).__name__)} {list(getattr(labels, 'shape', []))}")
    return labels


def _accuracy(report: VerifyReport, dense_outs, pruned_outs, labels: np.ndarray) -> Accuracy:
    stats = next((o for o in report.outputs if o.top1 is not None), None)
    if stats is None:
        raise OptionError("--labels was given but no output is shaped [N, classes] (2-D, classes > 1)")
    dense = np.concatenate([np.argmax(d, axis=1) for d in dense_outs[stats.name]])
    pruned = np.concatenate([np.argmax(p, axis=1) for p in pruned_outs[stats.name]])
    if dense.size != labels.size:
        raise OptionError(f"--labels holds {labels.size} labels for {dense.size} samples of output {stats.name!r}")
    return Accuracy(stats.name, int(labels.size), float(np.mean(dense == labels)), float(np.mean(pruned == labels)))


# ---------------------------------------------------------------------------------------------------------------
# Formatting


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3g}" if math.isfinite(x) else str(x)


def _fmt_cos(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.6f}"


def _up(x: float) -> str:
    """x rounded up to 3 significant digits: a threshold that surely passes."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    exp = math.floor(math.log10(abs(x))) - 2
    return f"{math.ceil(x / 10**exp) * 10**exp:.3g}"


def _down(x: float, digits: int = 6) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{math.floor(x * 10**digits) / 10**digits:.{digits}f}"


def would_pass_with(stats: OutputStats) -> str:
    parts = []
    if stats.max_abs is not None and math.isfinite(stats.max_abs):
        parts.append(f"--max-abs {_up(stats.max_abs)}")
    if stats.cosine is not None and math.isfinite(stats.cosine):
        parts.append(f"--min-cosine {_down(stats.cosine)}")
    if stats.top1 is not None:
        parts.append(f"--min-top1 {_down(stats.top1, 4)}")
    return " ".join(parts) if parts else "nothing (see note)"


def format_table(report: VerifyReport) -> str:
    """A plain-text table: one row per output, the gates, the verdict and each failed gate."""
    shapes = ", ".join(f"{k}{v}" for k, v in report.input_shapes.items())
    lines = [f"verify: {report.dense} vs {report.pruned}: {report.samples} input batch(es); inputs {shapes}"]
    header = ["output", "shape", "max_abs", "mean_abs", "rel", "cosine", "top1"]
    rows = [header]
    for o in report.outputs:
        rows.append([
            o.name, "x".join(map(str, o.shape)) or "scalar", _fmt(o.max_abs), _fmt(o.mean_abs), _fmt(o.rel),
            _fmt_cos(o.cosine), "-" if o.top1 is None else f"{o.top1:.4f}",
        ])
    lines += plain(rows, (0, 1))
    for o in report.outputs:
        line = f"  {o.name}: would pass with {would_pass_with(o)}"
        if o.note:
            line += f"  [{o.note}]"
        lines.append(line)
    if report.accuracy is not None:
        a = report.accuracy
        lines.append(f"accuracy on {a.samples} labelled samples ({a.output}): dense {a.dense:.4f}, pruned {a.pruned:.4f}, "
                     f"drop {a.drop * 100:+.2f} points")
    g = report.gates
    if g.any:
        given = [f"--{k.replace('_', '-')} {v:g}" for k, v in g.to_dict().items() if v is not None]
        lines.append("gates: " + ", ".join(given))
    if report.failures:
        lines.append(f"FAILED: {len(report.failures)} gate(s)")
        lines.extend(f"  {f}" for f in report.failures)
    elif g.any:
        lines.append("PASSED")
    else:
        lines.append("no gates given (--min-cosine, --min-top1, --max-abs, --max-accuracy-drop): "
                     "statistics only, nothing checked")
    return "\n".join(lines)
