"""Dense vs pruned through onnxruntime: per-output error statistics, top-1 agreement, and gates.

Per output, over all samples flattened (a = dense, b = pruned):
- rel_error ||a - b|| / ||a||: the headline; direction, scale and shift of the damage all count;
- norm_ratio ||b|| / ||a|| and both means: a change of scale or level, which cosine cannot see;
- cosine a.b / (||a|| ||b||), with a warning where it says little: when |mean a| >= std a, a constant output
  already scores cos(a, constant) = |mean| / rms >= 0.71 (sigmoid maps, probabilities, ReLU features), and
  when most of rel_error is a change of scale;
- max and mean absolute error;
- top-1 agreement, only for outputs that look like class scores (not_class_scores).
A gate that fails makes `VerifyReport.passed` False; the CLI then exits with VerificationError's code (4).
Each output also reports the tightest gate values it would have passed ("would pass with"), the most telling
first, leaving out cosine where it is uninformative.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx

from .errors import OnnxPruneError, OptionError
from .inputs import Feed
from .io import ModelSource
from .session import first_line, open_session, run_session, source_label
from .tables import plain


# ---------------------------------------------------------------------------------------------------------------
# Comparison

GATE_OPTIONS = {  # Gates field -> its CLI option, in the order "would pass with" offers them
    "max_rel_error": "--max-rel-error",
    "min_top1": "--min-top1",
    "min_cosine": "--min-cosine",
    "max_abs": "--max-abs",
    "max_accuracy_drop": "--max-accuracy-drop",
}


@dataclass(frozen=True)
class Gates:
    min_cosine: Optional[float] = None
    min_top1: Optional[float] = None
    max_abs: Optional[float] = None
    max_accuracy_drop: Optional[float] = None  # dense accuracy minus pruned accuracy, as a fraction (needs labels)
    max_rel_error: Optional[float] = None  # ||pruned - dense|| / ||dense|| per output

    def validate(self) -> None:
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise OptionError(f"min_cosine must lie in [-1, 1], got {self.min_cosine}", params=("min_cosine",))
        if self.min_top1 is not None and not 0.0 <= self.min_top1 <= 1.0:
            raise OptionError(f"min_top1 must lie in [0, 1], got {self.min_top1}", params=("min_top1",))
        if self.max_abs is not None and not self.max_abs >= 0.0:
            raise OptionError(f"max_abs must be >= 0, got {self.max_abs}", params=("max_abs",))
        if self.max_rel_error is not None and not self.max_rel_error >= 0.0:
            raise OptionError(f"max_rel_error must be >= 0 (0.05 = 5%), got {self.max_rel_error}", params=("max_rel_error",))
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise OptionError(f"max_accuracy_drop is a fraction in [0, 1] (0.01 = 1 point), got {self.max_accuracy_drop}",
                              params=("max_accuracy_drop",))

    @property
    def any(self) -> bool:
        return any(v is not None for v in self.to_dict().values())

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in GATE_OPTIONS}


@dataclass
class GateFailure:
    output: str
    gate: str  # a Gates field ("max_rel_error", "min_cosine", ...) or "shape"
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


# An output whose dense values have |mean| >= spread puts at least half its energy in its mean: then even a
# constant output scores cos(dense, constant) = |mean| / rms >= 1/sqrt(2) against it, and cosine is compressed
# into the little range above that floor.
COSINE_FLOOR_WARN = 1.0 / math.sqrt(2.0)
# Below this relative error, no warning about what cosine misses (float noise, a faithful model).
REL_ERROR_NEGLIGIBLE = 0.01
# Ops that map each element to a bounded score of its own: their [N, K] outputs are K independent scores
# (multi-label heads, watermark bits), not K classes competing in one row.
SQUASHING_OPS = ("Sigmoid", "HardSigmoid", "Tanh", "Softsign")
FEW_TOP1_ROWS = 20  # top-1 agreement over fewer rows is too coarse to say much: a warning beside it
SHAPE_ONLY_OPS = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Transpose")


@dataclass
class OutputStats:
    """One output of both models over all samples, flattened (a = dense, b = pruned)."""

    name: str
    shape: list[int]  # the dense output's shape for one sample
    pruned_shape: list[int]
    dtype: str
    rel_error: Optional[float] = None  # ||a - b|| / ||a||: direction, scale and shift all count
    norm_ratio: Optional[float] = None  # ||b|| / ||a||
    mean_dense: Optional[float] = None
    mean_pruned: Optional[float] = None
    std_dense: Optional[float] = None
    cosine: Optional[float] = None  # a.b / (||a|| ||b||): blind to scale, and to most changes when the mean dominates
    cosine_floor: Optional[float] = None  # cos(a, constant) = |mean a| / rms a: what an output with no signal scores
    max_abs: Optional[float] = None
    mean_abs: Optional[float] = None
    top1: Optional[float] = None  # fraction of rows whose argmax agrees, for outputs that look like class scores
    top1_rows: int = 0
    not_classes: str = ""  # why a 2-D output is not taken as class scores (so top-1 is not reported)
    warnings: list[str] = field(default_factory=list)
    note: str = ""
    constant: bool = False  # the dense output holds one value on every input: no statistic on it can fail

    @property
    def cosine_informative(self) -> bool:
        return self.cosine_floor is None or not self.cosine_floor >= COSINE_FLOOR_WARN

    @property
    def statistics(self) -> dict:
        """The statistic each gate judges, for this output (None where it does not apply), in GATE_OPTIONS order."""
        return {"max_rel_error": self.rel_error, "min_top1": self.top1, "min_cosine": self.cosine,
                "max_abs": self.max_abs}

    @property
    def tolerance(self) -> dict:
        """The tightest gate values this output would have passed, the most telling first (GATE_OPTIONS order);
        cosine only where it says something about the output (see COSINE_FLOOR_WARN)."""
        values = self.statistics
        if not self.cosine_informative:
            del values["min_cosine"]
        return {k: v for k, v in values.items() if v is not None}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": self.shape,
            "pruned_shape": self.pruned_shape,
            "dtype": self.dtype,
            "rel_error": _json_float(self.rel_error),
            "norm_ratio": _json_float(self.norm_ratio),
            "mean_dense": _json_float(self.mean_dense),
            "mean_pruned": _json_float(self.mean_pruned),
            "std_dense": _json_float(self.std_dense),
            "cosine": _json_float(self.cosine),
            "cosine_floor": _json_float(self.cosine_floor),
            "max_abs": _json_float(self.max_abs),
            "mean_abs": _json_float(self.mean_abs),
            "top1": _json_float(self.top1),
            "top1_rows": self.top1_rows,
            "not_classes": self.not_classes,
            "would_pass_with": {k: _json_float(v) for k, v in self.tolerance.items()},
            "warnings": self.warnings,
            "note": self.note,
            "constant": self.constant,
        }


@dataclass
class VerifyReport:
    dense: str
    pruned: str
    samples: int
    input_shapes: dict[str, list[int]]
    gates: Gates
    inputs: str = "given"  # where the feeds came from: "random", "--data X.npz", "--data-images DIR", ...
    outputs: list[OutputStats] = field(default_factory=list)
    failures: list[GateFailure] = field(default_factory=list)
    accuracy: Optional["Accuracy"] = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def random_inputs(self) -> bool:
        return self.inputs == "random"

    @property
    def gate_warnings(self) -> list[str]:
        """Gates that were checked where their statistic says little: their pass means little too."""
        weak = [o.name for o in self.outputs if not o.cosine_informative]
        if self.gates.min_cosine is None or not weak:
            return []
        floors = ", ".join(f"{o.name!r} {o.cosine_floor:.4f}" for o in self.outputs if not o.cosine_informative)
        return [f"--min-cosine says little for {', '.join(map(repr, weak))}: its values are mostly of one sign, so "
                f"even a constant output scores a high cosine ({floors}): gate with --max-rel-error"]

    def to_dict(self) -> dict:
        return {
            "dense": self.dense,
            "pruned": self.pruned,
            "samples": self.samples,
            "inputs": self.inputs,
            "input_shapes": self.input_shapes,
            "gates": self.gates.to_dict(),
            "passed": self.passed,
            "failures": [f.to_dict() for f in self.failures],
            "gate_warnings": self.gate_warnings,
            "outputs": [o.to_dict() for o in self.outputs],
            "accuracy": None if self.accuracy is None else asdict(self.accuracy),
        }


@dataclass
class Accuracy:
    """Top-1 accuracy of both models against labels, on the first output that looks like class scores."""

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


def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def squashed_outputs(model: ModelSource) -> dict[str, str]:
    """Graph outputs produced by an element-wise squashing op (SQUASHING_OPS), through shape-only ops:
    {output: op_type}. Reads the graph alone (no weights)."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    producer = {out: node for node in proto.graph.node for out in node.output}
    found = {}
    for vi in proto.graph.output:
        node = producer.get(vi.name)
        while node is not None and node.op_type in SHAPE_ONLY_OPS and node.input:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in SQUASHING_OPS:
            found[vi.name] = node.op_type
    return found


def not_class_scores(dense: list[np.ndarray], squashed_by: Optional[str]) -> str:
    """Why an output is not taken as class scores, or "" when it is.

    Class scores: a float output shaped [N, C] with C >= 2, one class per row, so that its argmax is the
    prediction. Excluded: an output made by an element-wise squashing op (Sigmoid, Tanh, ...: each element is
    scored on its own: multi-label heads, watermark bits, maps), and one whose dense values all lie in [0, 1]
    without each row summing to 1 (independent probabilities; softmax rows, which sum to 1, are class scores).
    Raw logits of independent bits cannot be told from class logits by their values: give such outputs no
    --min-top1 gate.
    """
    d0 = dense[0]
    if d0.ndim != 2 or d0.shape[1] < 2 or d0.dtype.kind != "f":
        return "not shaped [N, classes]"
    if squashed_by:
        return f"{squashed_by} output: independent scores per element, not one class per row"
    rows = np.concatenate([np.asarray(d, dtype=np.float64) for d in dense])
    if rows.size and np.all((rows >= 0.0) & (rows <= 1.0)) and not np.allclose(rows.sum(axis=1), 1.0, atol=1e-2):
        return "values in [0, 1] whose rows do not sum to 1: independent scores, not one class per row"
    return ""


def _output_stats(name: str, dense: list[np.ndarray], pruned: list[np.ndarray],
                  squashed_by: Optional[str] = None) -> OutputStats:
    d0, p0 = dense[0], pruned[0]
    stats = OutputStats(name, list(d0.shape), list(p0.shape), str(d0.dtype))
    if any(d.shape != p.shape for d, p in zip(dense, pruned)):
        stats.note = f"shape differs: dense {list(d0.shape)}, pruned {list(p0.shape)}"
        return stats
    a = np.concatenate([np.asarray(d, dtype=np.float64).ravel() for d in dense])
    b = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in pruned])
    if a.size == 0:
        stats.max_abs = stats.mean_abs = stats.rel_error = 0.0
        stats.cosine = stats.norm_ratio = 1.0
        stats.note = "empty output"
        return stats
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(a == b, 0.0, np.abs(a - b))  # equal infinities are no error
        stats.max_abs = float(np.max(err))
        stats.mean_abs = float(np.mean(err))
        norm_a, norm_b, norm_err = (float(np.linalg.norm(v)) for v in (a, b, err))
        stats.mean_dense, stats.mean_pruned, stats.std_dense = float(np.mean(a)), float(np.mean(b)), float(np.std(a))
    finite = math.isfinite(norm_a) and math.isfinite(norm_b)
    stats.rel_error = _ratio(norm_err, norm_a) if finite else float("nan")
    stats.norm_ratio = _ratio(norm_b, norm_a) if finite else float("nan")
    stats.cosine = _cosine(a, b)
    if finite and norm_a > 0:
        stats.cosine_floor = abs(float(np.sum(a))) / (math.sqrt(a.size) * norm_a)
    if d0.ndim == 2:  # nobody expects top-1 of a map or a vector: they get no reason either
        stats.not_classes = not_class_scores(dense, squashed_by)
    if d0.ndim == 2 and not stats.not_classes:
        top_d = np.concatenate([np.argmax(d, axis=1) for d in dense])
        top_p = np.concatenate([np.argmax(p, axis=1) for p in pruned])
        stats.top1 = float(np.mean(top_d == top_p)) if top_d.size else None
        stats.top1_rows = int(top_d.size)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        stats.note = "non-finite values (NaN/Inf) in " + (
            "both outputs" if not np.isfinite(a).all() and not np.isfinite(b).all()
            else "the dense output" if not np.isfinite(a).all() else "the pruned output"
        )
    else:
        stats.warnings = _cosine_warnings(stats)
    if stats.top1 is not None and stats.top1_rows < FEW_TOP1_ROWS:
        stats.warnings.append(f"top-1 agreement over {stats.top1_rows} row(s) only: each row moves it by "
                              f"{100 / stats.top1_rows:.0f} points (and a [N, K] output may be K scores, not K "
                              "classes); judge it on more samples (--data)")
    if a.size > 1 and np.all(a == a[0]):
        stats.constant = True
        stats.warnings.insert(0, f"the dense output is constant ({a[0]:g}) on these inputs: every statistic on it "
                                 "passes whatever the pruned model computes; compare on real inputs (--data) or at "
                                 "real sizes (--shape)")
    return stats


def _cosine_warnings(s: OutputStats) -> list[str]:
    """What cosine cannot see in this output: a dominant mean (then any output of the same sign scores close
    to 1), or damage that is mostly a change of scale (cosine ignores scale; rel_error does not)."""
    if not s.cosine_informative:
        sign = "positive" if s.mean_dense > 0 else "negative"
        return [
            f"cosine says little here: the values are mostly {sign} (mean {s.mean_dense:.3g}, spread "
            f"{s.std_dense:.3g}), so even a constant output scores {s.cosine_floor:.4f}; the pruned output's mean is "
            f"{s.mean_pruned:.3g} (x{_ratio(s.mean_pruned, s.mean_dense):.3g}): judge by rel_err (--max-rel-error)"
        ]
    e, r = s.rel_error, s.norm_ratio
    # rel_error^2 = (1 - r)^2 + 2 r (1 - cosine): the first term is the part cosine cannot see
    if e is not None and r is not None and e >= REL_ERROR_NEGLIGIBLE and (1.0 - r) ** 2 >= 0.5 * e * e:
        return [f"cosine ignores scale: the pruned output's norm is x{r:.3g} the dense one's, most of rel_err "
                f"{e:.3g}: judge by rel_err (--max-rel-error)"]
    return []


def _check_gates(stats: OutputStats, gates: Gates) -> list[GateFailure]:
    fails = []
    if stats.note.startswith("shape differs"):
        return [GateFailure(stats.name, "shape", None, None, f"output {stats.name!r}: {stats.note}")]
    # written as "not (value passes)" so that NaN fails every gate
    if gates.max_rel_error is not None and not (stats.rel_error is not None and stats.rel_error <= gates.max_rel_error):
        fails.append(GateFailure(
            stats.name, "max_rel_error", stats.rel_error, gates.max_rel_error,
            f"output {stats.name!r}: relative error {_fmt(stats.rel_error)} > --max-rel-error {gates.max_rel_error:g}",
        ))
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
    inputs: str = "given",
    providers: Sequence = ("CPUExecutionProvider",),
    progress: Optional[Callable[[int, int], None]] = None,
) -> VerifyReport:
    """Run both models on every feed (onnxruntime, CPU unless `providers` says otherwise) and compare their outputs
    under `gates`. `progress(done, total)` after each feed.

    `inputs` says where the feeds come from ("random" for make_inputs' noise; the report then says what
    that means). Both models must have the same input and output names (OnnxPruneError otherwise).
    `--min-top1` with no output that looks like class scores (see not_class_scores) is an OptionError: a gate
    that cannot be checked must not pass silently.
    """
    gates.validate()
    if not feeds:
        raise OptionError("no input samples to compare on")
    dense_label, pruned_label = source_label(dense, "dense"), source_label(pruned, "pruned")
    sd, sp = open_session(dense, providers=providers), open_session(pruned, providers=providers)
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
    for done, feed in enumerate(feeds, 1):
        try:
            for name, value in zip(d_out, run_session(sd, feed, dense_label)):
                dense_outs[name].append(np.asarray(value))
            for name, value in zip(p_out, run_session(sp, feed, pruned_label)):
                pruned_outs[name].append(np.asarray(value))
        except OnnxPruneError as exc:
            if inputs != "random":
                raise
            shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feed.items())
            raise OnnxPruneError(f"{exc} (random inputs at {shapes}: where the model needs other sizes, pin them "
                                 "with --shape, or give real inputs with --data)") from None
        if progress is not None:
            progress(done, len(feeds))

    report = VerifyReport(
        dense=dense_label,
        pruned=pruned_label,
        samples=len(feeds),
        input_shapes={k: list(np.shape(v)) for k, v in feeds[0].items()},
        gates=gates,
        inputs=inputs,
    )
    squashed = squashed_outputs(dense)
    for name in d_out:
        stats = _output_stats(name, dense_outs[name], pruned_outs[name], squashed.get(name))
        report.outputs.append(stats)
        report.failures.extend(_check_gates(stats, gates))
    if gates.min_top1 is not None and all(
        o.top1 is None for o in report.outputs if not o.note.startswith("shape differs")
    ):
        raise OptionError("min_top1 was given but no output looks like class scores" + _why_no_classes(report),
                          params=("min_top1",))
    if gates.any and report.outputs and all(o.constant for o in report.outputs):
        raise OptionError(f"every output of the dense model is constant on these inputs ({report.inputs}, "
                          f"{', '.join(f'{k}{v}' for k, v in report.input_shapes.items())}): no gate can be judged on "
                          "them; compare on real inputs (--data) or at real sizes (--shape)")
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
        raise OptionError("max_accuracy_drop needs labels", params=("max_accuracy_drop", "labels"))
    return report


def _why_no_classes(report: VerifyReport) -> str:
    reasons = [f"{o.name!r}: {o.not_classes}" for o in report.outputs if o.not_classes]
    return (" ([N, classes], C >= 2" + "".join(f"; {r}" for r in reasons) + ")")


def load_labels(path: Union[str, os.PathLike]) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"--labels {p}: no such file")
    try:
        labels = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise OptionError(f"--labels {p}: not a readable .npy file: {first_line(exc)}") from None
    if not hasattr(labels, "ndim") or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise OptionError(f"--labels {p}: needs a 1-D array of integer class ids, got "
                          f"{getattr(labels, 'dtype', type(labels).__name__)} {list(getattr(labels, 'shape', []))}")
    return labels


def _accuracy(report: VerifyReport, dense_outs, pruned_outs, labels: np.ndarray) -> Accuracy:
    stats = next((o for o in report.outputs if o.top1 is not None), None)
    if stats is None:
        raise OptionError("labels was given but no output looks like class scores" + _why_no_classes(report),
                          params=("labels",))
    dense = np.concatenate([np.argmax(d, axis=1) for d in dense_outs[stats.name]])
    pruned = np.concatenate([np.argmax(p, axis=1) for p in pruned_outs[stats.name]])
    if dense.size != labels.size:
        raise OptionError(f"labels holds {labels.size} labels for {dense.size} samples of output {stats.name!r}",
                          params=("labels",))
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


# Past this relative error on random inputs, the table says that pruning without calibration data does this.
LARGE_REL_ERROR = 0.5


def would_pass_with(stats: OutputStats) -> str:
    """The tightest gates this output passes, the most telling first: relative error (it sees direction, scale
    and shift), top-1 for class scores, cosine where it is informative, max abs."""
    parts = []
    for key, value in stats.tolerance.items():
        if not math.isfinite(value):
            continue
        text = _down(value, 4) if key == "min_top1" else _down(value) if key == "min_cosine" else _up(value)
        parts.append(f"{GATE_OPTIONS[key]} {text}")
    return " ".join(parts) if parts else "nothing (see note)"


def format_table(report: VerifyReport) -> str:
    """A plain-text table: one row per output, what each statistic misses, the gates, the verdict and each
    failed gate."""
    shapes = ", ".join(f"{k}{v}" for k, v in report.input_shapes.items())
    source = "random inputs" if report.random_inputs else f"inputs from {report.inputs}"
    lines = [f"verify: {report.dense} vs {report.pruned}: {report.samples} batch(es) of {source}; inputs {shapes}"]
    header = ["output", "shape", "rel_err", "norm_ratio", "cosine", "max_abs", "mean_abs", "top1"]
    rows = [header]
    for o in report.outputs:
        rows.append([
            o.name, "x".join(map(str, o.shape)) or "scalar", _fmt(o.rel_error), _fmt(o.norm_ratio),
            _fmt_cos(o.cosine) + ("" if o.cosine_informative else " (!)"), _fmt(o.max_abs), _fmt(o.mean_abs),
            "-" if o.top1 is None else f"{o.top1:.4f}",
        ])
    lines += plain(rows, (0, 1))
    for o in report.outputs:
        line = f"  {o.name}: would pass with {would_pass_with(o)}"
        if o.note:
            line += f"  [{o.note}]"
        lines.append(line)
        lines.extend(f"  {o.name}: warning: {w}" for w in o.warnings)
        if o.not_classes:
            lines.append(f"  {o.name}: no top-1: {o.not_classes}")
    if report.random_inputs:
        lines.append("note: random inputs: the numbers measure how much the function changed on noise, not accuracy "
                     "on real data; give --data X.npz or --data-images DIR")
        worst = max((o.rel_error for o in report.outputs if o.rel_error is not None and math.isfinite(o.rel_error)),
                    default=0.0)
        if worst >= LARGE_REL_ERROR:
            lines.append(f"note: a change this large (rel_err {worst:.2g}) is expected right after pruning without "
                         "calibration data (prune --calib or --calib-images recovers much of it); judge accuracy on "
                         "real inputs (--data or --data-images, with --labels)")
    if report.accuracy is not None:
        a = report.accuracy
        lines.append(f"accuracy on {a.samples} labelled samples ({a.output}): dense {a.dense:.4f}, pruned {a.pruned:.4f}, "
                     f"drop {a.drop * 100:+.2f} points")
    g = report.gates
    if g.any:
        given = [f"{GATE_OPTIONS[k]} {v:g}" for k, v in g.to_dict().items() if v is not None]
        lines.append("gates: " + ", ".join(given))
        lines.extend(f"warning: {w}" for w in report.gate_warnings)
    if report.failures:
        lines.append(f"FAILED: {len(report.failures)} gate(s)")
        lines.extend(f"  {f}" for f in report.failures)
    elif g.any:
        lines.append("PASSED")
    else:
        lines.append(f"no gates given ({', '.join(GATE_OPTIONS.values())}): statistics only, nothing checked")
    return "\n".join(lines)
