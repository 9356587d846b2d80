"""`onnxprune sensitivity`: how much each group, narrowed alone, changes the model's outputs, and what it saves.

Every (group, ratio) is an independent task: the model with only that group narrowed (its lowest-L1 channels
removed, the kept count aligned as prune aligns it) is run on the calibration inputs and compared with the dense
model's outputs: relative error ||pruned - dense|| / ||dense|| (the largest over the outputs; the allocator's
loss), cosine (the lowest), and with labels, top-1 accuracy. The milliseconds each ratio saves come from the
latency profile (latency.py; measured here, on this machine, or read from its cache).

Tasks run through an executor (executors.py): in this process, or as Ray tasks. Each finished task is written to
sensitivity.json at once (atomically), so an interrupted run keeps what finished, and a rerun with the same model
and settings skips it. Outputs: sensitivity.json, sensitivity.md and, with matplotlib (onnxprune[plot]),
sensitivity.png. `prune --latency-target --sensitivity sensitivity.json` uses the relative errors in place of
channel scores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import onnx

from .calib import CALIB_SAMPLES
from .errors import OptionError
from .io import make_folder, write_text
from .plan import PlanOptions
from .tables import markdown, num

DEFAULT_RATIOS = (0.25, 0.5, 0.75)
FORMAT_VERSION = 1


@dataclass
class SensitivityPoint:
    group: int
    channels: int
    ratio: float  # asked for
    kept: int  # channels kept (aligned)
    rel_error: float
    cosine: float
    accuracy: Optional[float] = None
    saved_ms: Optional[float] = None
    device: str = ""  # the machine the task ran on


@dataclass
class SensitivityReport:
    model: str
    model_sha256: str
    settings: dict  # what the tasks depend on: ratios, round_to, min_channels, samples, labels, shapes
    points: list[SensitivityPoint] = field(default_factory=list)
    dense_accuracy: Optional[float] = None
    latency: str = ""  # how the milliseconds were obtained
    dense_ms: Optional[float] = None
    complete: bool = False
    notes: list[str] = field(default_factory=list)
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"version": FORMAT_VERSION, "model": self.model, "model_sha256": self.model_sha256,
                "settings": self.settings, "complete": self.complete, "dense_accuracy": self.dense_accuracy,
                "dense_ms": self.dense_ms, "latency": self.latency, "notes": list(self.notes),
                "points": [asdict(p) for p in sorted(self.points, key=lambda p: (p.group, p.kept))],
                "files": self.files}

    def format_markdown(self) -> str:
        acc = self.dense_accuracy is not None
        header = ["group", "channels", "ratio", "kept", "rel. error", "cosine"] + (["accuracy"] if acc else []) + [
            "saved ms"]
        rows = []
        for p in sorted(self.points, key=lambda p: (p.group, p.kept)):
            rows.append([str(p.group), str(p.channels), f"{p.ratio:g}", str(p.kept), f"{p.rel_error:.4f}",
                         f"{p.cosine:.4f}"] + ([num(p.accuracy, ".4f")] if acc else []) + [num(p.saved_ms, ".3f")])
        lines = [f"# Sensitivity of {self.model}", "",
                 f"Each row: the model with only that group narrowed, on {self.settings.get('samples')} calibration "
                 f"samples against the dense model. Dense latency {num(self.dense_ms, '.3f')} ms; {self.latency}."]
        if acc:
            lines.append(f"Dense accuracy {self.dense_accuracy:.4f}.")
        lines += [""] + markdown(header, rows, ())
        lines += [""] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------------
# One task


def _task(context: Mapping, job: tuple[int, int]) -> dict:
    """Group `job[0]` narrowed to `job[1]` channels: its outputs on the calibration feeds against the dense ones."""
    from .api import _load_work, _scores
    from .graph import drop_unused
    from .latency import device_name
    from .plan import plan_widths
    from .rewrite import rewrite
    from .session import open_session

    group, kept = job
    model = onnx.load_from_string(context["model"])
    work = _load_work(model, context["shapes"], None, None, None, None)
    analysis, scores = work.analysis, _scores(work, "l1")
    plan = plan_widths(analysis.groups, scores, {group: kept})
    space = next(g.space for g in analysis.groups if g.id == group)
    pruned = rewrite(analysis, {space: plan.decisions[group].kept})
    drop_unused(pruned)
    session = open_session(pruned)
    outputs = [session.run(None, feed) for feed in context["feeds"]]
    rel, cos = 0.0, 1.0
    for k, dense in enumerate(context["dense"]):
        a = np.concatenate([np.asarray(d, np.float64).ravel() for d in dense])
        b = np.concatenate([np.asarray(o[k], np.float64).ravel() for o in outputs])
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        rel = max(rel, float(np.linalg.norm(a - b) / na) if na > 0 else float(nb > 0))
        cos = min(cos, float(a @ b / (na * nb)) if na > 0 and nb > 0 else float(na == nb))
    accuracy = None
    if context["labels"] is not None:
        predicted = np.concatenate([np.argmax(o[context["class_output"]], axis=1) for o in outputs])
        accuracy = float(np.mean(predicted == context["labels"]))
    return {"rel_error": rel, "cosine": cos, "accuracy": accuracy, "device": device_name("cpu")}


# ---------------------------------------------------------------------------------------------------------------
# The run


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=1))


def _finished(path: Path, sha: str, settings: dict) -> dict[tuple[int, int], SensitivityPoint]:
    """Points a previous run with the same model and settings finished (kept in its sensitivity.json)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("model_sha256") != sha or data.get("settings") != settings:
        return {}
    try:
        return {(p["group"], p["kept"]): SensitivityPoint(**p) for p in data.get("points", [])}
    except TypeError:
        return {}


def _class_output(outputs: Sequence[np.ndarray]) -> Optional[int]:
    for k, out in enumerate(outputs):
        if np.ndim(out) == 2 and np.shape(out)[1] >= 2:
            return k
    return None


def sensitivity(
    model,
    calib,
    out_dir,
    *,
    labels: Optional[np.ndarray] = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    round_to: int = PlanOptions.round_to,
    min_channels: int = PlanOptions.min_channels,
    calib_samples: Optional[int] = CALIB_SAMPLES,
    shapes: Optional[Mapping] = None,
    deployment=None,
    executor=None,
    cache_dir=None,
    profile_file=None,
    budget_s: Optional[float] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    say: Optional[Callable[[str], None]] = None,
    warn: Optional[Callable[[str], None]] = None,
) -> SensitivityReport:
    """Fidelity (and accuracy with `labels`) of every prunable group narrowed alone at every ratio, and the
    milliseconds each saves on `deployment` (latency.Deployment; None: no latency)."""
    from . import api
    from .executors import InProcessExecutor
    from .io import load_model
    from .latency import DEFAULT_BUDGET_S, device_name, get_profile, model_hash
    from .plan import aligned_widths
    from .session import open_session

    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise OptionError(f"ratios must be in (0, 1), got {list(ratios)}")
    tell = say or (lambda _m: None)
    out = make_folder(out_dir)
    source = load_model(model)
    work = api._load_work(source, shapes, None, calib, calib_samples, None)
    analysis, cost, samples = work.analysis, work.cost_before, work.samples
    feeds = list(samples.feeds(32))
    dense_session = open_session(source)
    dense_outputs = [dense_session.run(None, feed) for feed in feeds]
    del dense_session
    class_output = None
    dense_accuracy = label_note = None
    if labels is not None:
        class_output = _class_output(dense_outputs[0])
        if class_output is None:
            raise OptionError("--labels was given but no output looks like class scores ([N, classes])")
        predicted = np.concatenate([np.argmax(o[class_output], axis=1) for o in dense_outputs])
        labels, label_note = samples.labels_for(np.asarray(labels))
        dense_accuracy = float(np.mean(predicted == labels))
    groups = [g for g in analysis.groups if g.prunable]
    widths_of = {g.id: aligned_widths(g, analysis.spaces, round_to, min_channels) for g in groups}
    jobs = []
    ratio_of = {}
    for g in groups:
        for r in sorted(ratios):
            fit = [w for w in widths_of[g.id] if w >= g.size * (1.0 - r) - 1e-9]
            kept = fit[0]
            if kept < g.size and (g.id, kept) not in ratio_of:
                ratio_of[(g.id, kept)] = r
                jobs.append((g.id, kept))
    size_of = {g.id: g.size for g in groups}
    settings = {"ratios": sorted(ratios), "round_to": round_to, "min_channels": min_channels,
                "samples": samples.count, "labels": None if labels is None else int(np.asarray(labels).size),
                "shapes": {k: list(v) for k, v in sorted((shapes or {}).items())}}
    sha = model_hash(source)
    report = SensitivityReport(str(model), sha, settings, dense_accuracy=dense_accuracy)
    if label_note:
        report.notes.append(label_note)
    json_path = out / "sensitivity.json"
    done = _finished(json_path, sha, settings)
    report.points = [p for key, p in done.items() if key in ratio_of]
    if report.points:
        tell(f"resuming: {len(report.points)} of {len(jobs)} tasks finished in an earlier run")
    profile = None
    if deployment is not None:
        narrowable = {g: w for g, w in widths_of.items() if len(w) > 1}
        profile = get_profile(source, narrowable, api.group_macs(analysis, cost), cost.macs, deployment,
                              shapes=shapes, cache_dir=cache_dir, profile_file=profile_file,
                              budget_s=DEFAULT_BUDGET_S if budget_s is None else budget_s,
                              progress=lambda m: tell(f"latency ladder: {m}"), warn=warn)
        report.latency, report.dense_ms = profile.cost_text(), profile.dense_ms
        report.notes += profile.notes
    else:
        report.latency = "latency not measured"
    del analysis, work
    todo = [j for j in jobs if j not in done]
    context = {"model": source.SerializeToString(), "shapes": dict(shapes or {}), "feeds": feeds,
               "dense": [[o[k] for o in dense_outputs] for k in range(len(dense_outputs[0]))],
               "labels": None if labels is None else np.asarray(labels), "class_output": class_output}
    finished = len(jobs) - len(todo)
    if progress:
        progress(finished, len(jobs))
    runner = executor or InProcessExecutor()
    for (group, kept), result in runner.map(_task, todo, context):
        saved = profile.groups[group].saved(kept) if profile is not None else None
        report.points.append(SensitivityPoint(group, size_of[group], ratio_of[(group, kept)], kept,
                                              result["rel_error"], result["cosine"], result["accuracy"], saved,
                                              result["device"]))
        _write_json(json_path, report.to_dict())
        finished += 1
        if progress:
            progress(finished, len(jobs))
    report.complete = True
    here = device_name("cpu")
    elsewhere = sorted({p.device for p in report.points if p.device and p.device != here})
    if elsewhere and profile is not None:
        note = (f"tasks ran on {', '.join(elsewhere)}; the milliseconds were measured here ({here}): latency "
                "ladders hold only on identical machines")
        report.notes.append(note)
        if warn:
            warn(note)
    report.files = {"json": str(json_path), "markdown": str(out / "sensitivity.md")}
    plot = _plot(report, out / "sensitivity.png")
    if plot:
        report.files["plot"] = plot
    write_text(out / "sensitivity.md", report.format_markdown())
    _write_json(json_path, report.to_dict())
    return report


def load_sensitivity(path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        data["points"], data["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OptionError(f"--sensitivity {p}: not a sensitivity report ({type(exc).__name__}: {exc})") from None
    if not data.get("complete"):
        raise OptionError(f"--sensitivity {p}: the run that wrote it did not finish; rerun sensitivity to complete it")
    return data


def loss_table(data: Mapping, group: int, widths: Sequence[int], model: onnx.ModelProto) -> list[float]:
    """The loss (relative output error) of `group` at each width, interpolated from the sensitivity points;
    the full width loses nothing and an empty group is taken to lose everything (relative error 1)."""
    from .latency import model_hash

    if data["model_sha256"] != model_hash(model):
        raise OptionError("--sensitivity was computed for another model (its hash differs)")
    points = sorted((p["kept"], p["rel_error"]) for p in data["points"] if p["group"] == group)
    if not points:
        raise OptionError(f"--sensitivity has no point for group {group}: rerun sensitivity with the same "
                          "--round-to, --min-channels and --exclude")
    size = widths[-1]
    xs = [0] + [k for k, _ in points] + [size]
    ys = [max(1.0, points[0][1])] + [e for _, e in points] + [0.0]
    ys = list(np.maximum.accumulate(np.asarray(ys)[::-1])[::-1])  # narrower never loses less
    return [float(np.interp(w, xs, ys)) for w in widths]


def _plot(report: SensitivityReport, path: Path) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for group in sorted({p.group for p in report.points}):
        pts = sorted((p for p in report.points if p.group == group), key=lambda p: p.ratio)
        left.plot([p.ratio for p in pts], [p.rel_error for p in pts], "o-", label=f"group {group}")
        if all(p.saved_ms is not None for p in pts):
            right.plot([p.ratio for p in pts], [p.saved_ms for p in pts], "o-", label=f"group {group}")
    left.set_xlabel("ratio removed (this group alone)")
    left.set_ylabel("relative output error")
    right.set_xlabel("ratio removed (this group alone)")
    right.set_ylabel("ms saved")
    left.set_title(Path(report.model).name)
    if len({p.group for p in report.points}) <= 12:
        left.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
