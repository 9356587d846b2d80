"""The Python API: `analyze` and `prune`, the same operations the CLI runs."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from .cost import CostReport, count_cost, counting_shapes, generic_input_shapes
from .deps.context import Analysis, analyze as _analyze, declined_layers, no_group_reason, subgraph_reason
from .deps.rules import Registry, default_registry
from .errors import NothingToPruneError, OnnxPruneWarning, OptionError
from .fold import fold_constants
from .graph import Graph, drop_unused
from .calib import MIN_CALIB_SAMPLES, ImageFolder, SampleSet, from_feeds, load_images, load_npz
from .importance import DATA_CRITERIA, activation_inputs, channel_scores
from .io import ModelSource, load_model_sized, model_nbytes
from .oracle import removed_reads
from .plan import DEFAULT_ROUND_TO, Plan, PlanOptions, exclude_patterns, kind_of, make_plan, unit_of, unmatched_excludes
from .planfile import PlanFile, plan_file
from .report import AnalysisReport, GroupReport, PruneReport, Totals
from .recovery import RecoveryReport, check_method
from .recovery import recover as recover_model
from .rewrite import rewrite
from .shapes import infer_generic_shapes
from .validate import io_signature

GENERIC_SIZES_FAIL = (
    "shape inference fails at the generic sizes taken for the dynamic dims (the model accepts only some sizes), so "
    "the analysis left them symbolic and the MAC counts may be off: pin real sizes with --shape"
)
NO_RECOVERY_NOTE = (
    "no calibration data was given: accuracy usually drops sharply right after pruning; "
    "fine-tune the pruned model or recover it with calibration data"
)


@dataclass
class PruneResult:
    model: onnx.ModelProto
    report: PruneReport
    analysis: Analysis
    plan: Plan
    masked_reads: dict  # (weight, axis) -> removed positions: the masking oracle's input (see oracle.py)
    dense_io: tuple  # the dense model's inputs and outputs (validate.io_signature), which must not change
    recovery: Optional[RecoveryReport] = None
    source: Optional[str] = None  # the path the model was read from (None for a ModelProto)
    shapes: dict = field(default_factory=dict)  # the input shapes given (pinned dims)
    calib_args: tuple = ()  # the prune options that name the calibration data: ("--calib", path), ... ; () in memory
    finetune: Optional["FinetuneReport"] = None  # onnxprune.finetune.train.FinetuneReport

    def save(self, path, **kwargs):
        from .io import save_model

        return save_model(self.model, path, **kwargs)


def _working_copy(source: ModelSource) -> tuple[onnx.ModelProto, Optional[int]]:
    """A model prune() may change, and the bytes it takes on disk (None for a ModelProto)."""
    model, disk_bytes = load_model_sized(source)
    if isinstance(source, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy, None
    return model, disk_bytes


def _analysis(model: onnx.ModelProto, shapes, registry, sample=None) -> tuple[Graph, Analysis, CostReport]:
    """The analysis runs with every dim nobody pinned at a generic size (see cost.generic_sizes), so that its
    groups and plan are those of a pinned model; MACs are counted at cost.counting_shapes, which the report states
    (`sample`: one calibration feed's input shapes)."""
    fold_constants(model)
    generic = generic_input_shapes(model, shapes)
    info, at_generic = infer_generic_shapes(model, generic, shapes)
    graph = Graph(model, shapes=info)  # names unnamed nodes, as the cost report does
    counted, notes = counting_shapes(model, shapes, sample)
    if not at_generic:
        notes.append(GENERIC_SIZES_FAIL)
    cost = count_cost(model, counted)
    cost.notes[:0] = notes
    return graph, _analyze(graph, registry or default_registry()), cost


def _op_types(analysis: Analysis) -> dict[str, str]:
    return {node.name: node.op_type for node in analysis.graph.nodes()}


def _group_reports(analysis: Analysis, plan: Optional[Plan] = None) -> list[GroupReport]:
    out = []
    ops = _op_types(analysis)
    for g in analysis.groups:
        decision = plan.decisions.get(g.id) if plan is not None else None
        kept = len(decision.kept) if decision is not None else g.size
        note = decision.note if decision is not None else ""
        out.append(GroupReport(g.id, g.size, kept, g.prunable, g.members, list(g.reasons), unit_of(g, analysis.spaces),
                               note, kind_of(g, analysis.spaces, ops)))
    return out


def _prunable_macs(analysis: Analysis, cost: CostReport) -> tuple[int, int]:
    """MACs of the layers pruning shrinks (their output or input channels are in a prunable group), and of those
    where both sides are: at --ratio r a one-sided layer loses about r of its MACs, a two-sided one 2r - r^2."""
    sides: dict[str, set[str]] = {}
    for g in analysis.groups:
        if g.prunable:
            for p in g.places:
                if p.role in ("in", "out"):
                    sides.setdefault(p.node, set()).add(p.role)
    macs = {name: c.macs for name, c in cost.per_node.items()}
    return (sum(macs.get(n, 0) for n in sides),
            sum(macs.get(n, 0) for n, roles in sides.items() if roles == {"in", "out"}))


def _nothing_to_prune(analysis: Analysis, cost: CostReport, shown: int = 2) -> str:
    """Why no group can be pruned: the reasons of the groups that hold the most MACs first."""
    def group_macs(g) -> int:
        nodes = {p.node for p in g.places if p.role in ("in", "out")}
        return sum(c.macs for name, c in cost.per_node.items() if name in nodes)

    if not analysis.groups:
        return "nothing to prune: no channel group of this model can be pruned; " + no_group_reason(analysis)
    reasons = list(dict.fromkeys(g.reasons[0] for g in sorted(analysis.groups, key=group_macs, reverse=True)
                                 if g.reasons))
    inside = subgraph_reason(analysis.graph)
    if inside:
        reasons.insert(0, inside)
    more = f" (+{len(reasons) - shown} more: onnxprune inspect lists every group)" if len(reasons) > shown else ""
    return "nothing to prune: no channel group of this model can be pruned; " + "; ".join(reasons[:shown]) + more


def _analysis_notes(analysis: Analysis) -> list[str]:
    """What the groups do not show: why there are none, layers inside subgraphs, layers a rule did not follow."""
    if not analysis.groups:
        return [f"no channel groups: {no_group_reason(analysis)}"]
    inside = subgraph_reason(analysis.graph)
    return ([inside] if inside else []) + [f"in no group: {d}" for d in declined_layers(analysis)]


def analyze(
    model: ModelSource,
    *,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    registry: Optional[Registry] = None,
) -> AnalysisReport:
    """Every channel group of `model`: members, size, and whether it can be pruned (or why not)."""
    working, _ = _working_copy(model)
    graph, analysis, cost = _analysis(working, shapes, registry)
    notes = list(cost.notes) + _analysis_notes(analysis)
    prunable_macs, both_sides = _prunable_macs(analysis, cost)
    return AnalysisReport(
        groups=_group_reports(analysis),
        totals=Totals(cost.params, cost.macs),
        prunable_macs=prunable_macs,
        prunable_macs_both_sides=both_sides,
        input_shapes=cost.input_shapes,
        notes=notes,
    )


CalibSource = Union[str, "os.PathLike", SampleSet, ImageFolder, Iterable[Mapping]]
Progress = Optional[Callable[[str, int, int], None]]  # (stage, done, total)


def calibration_samples(calib: CalibSource, model: onnx.ModelProto, limit: Optional[int] = None,
                        progress: Optional[Callable[[int, int], None]] = None, option: str = "--calib",
                        minimum: int = MIN_CALIB_SAMPLES) -> SampleSet:
    """A SampleSet from an .npz path, an ImageFolder, a SampleSet, or any iterable of feed dicts; at most `limit`
    samples (OptionError when fewer than `minimum`). `progress(done, total)`: images read (a folder), or
    once when the samples are loaded. `option` names an .npz path's option in messages."""
    if isinstance(calib, SampleSet):
        samples = calib
    elif isinstance(calib, ImageFolder):
        samples = load_images(calib.folder, model, calib.options, limit=limit, progress=progress)
    elif isinstance(calib, (str, os.PathLike)):
        samples = load_npz(calib, model, option)
    else:
        samples = from_feeds(calib, model)
    samples = samples.take(limit).require(minimum)
    if progress is not None and not isinstance(calib, ImageFolder):
        progress(samples.count, samples.count)
    return samples


def prune(
    model: ModelSource,
    *,
    ratio: float = 0.5,
    scope: str = "uniform",
    criterion: str = "l1",
    max_ratio: float = 0.9,
    round_to: int = DEFAULT_ROUND_TO,
    min_channels: int = 1,
    exclude: Optional[Sequence[str]] = (),
    heads_ratio: Optional[float] = None,
    ffn_ratio: Optional[float] = None,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    registry: Optional[Registry] = None,
    calib: Optional[CalibSource] = None,
    calib_samples: Optional[int] = 512,
    recover: Optional[str] = None,
    progress: Progress = None,
    finetune_epochs: int = 0,
    finetune: Optional["FinetuneOptions"] = None,
    finetune_progress=None,
) -> PruneResult:
    """Remove the lowest-scoring `ratio` of channels from every prunable group; returns the smaller model.

    `model` is a path or a ModelProto (which is not modified). See PlanOptions for the selection options.
    `exclude`: fnmatch globs (case-sensitive) on node names, as `inspect` lists them; a group with a member that
    matches is left whole. None or () excludes nothing; a single string is one pattern. A pattern that matches
    no node of a prunable group excludes nothing: it raises an `OnnxPruneWarning` (warnings.warn) and is listed
    in `result.report.warnings`.
    `calib` (an .npz path, a calib.SampleSet or any iterable of feed dicts) enables the data-aware criteria
    ("activation", "wanda") and recovery (`recover`: none, bias, lsq, stats or all; default all with
    calibration data, none without). See recovery.py.
    `progress(stage, done, total)` follows the long stages: "calibration" (images read, or once when the samples
    are loaded), "scores" (samples run for a data-aware criterion), "recovery" (samples run, over all passes).
    `finetune_epochs` > 0 (or `finetune`, a finetune.train.FinetuneOptions) then trains the pruned model by
    distillation from the dense one on the same calibration samples (needs onnxprune[finetune]; see
    onnxprune/finetune/train.py); `finetune_progress` is a finetune.train.Progress.
    """
    if finetune_epochs and finetune is not None:
        raise OptionError("give the epoch count in the fine-tuning options or as finetune_epochs, not both")
    if finetune_epochs < 0:
        raise OptionError(f"--finetune-epochs must not be negative, got {finetune_epochs}")
    if finetune is None and finetune_epochs:
        finetune = _finetune_options(finetune_epochs)
    if finetune is not None and calib is None:
        raise OptionError("fine-tuning needs training inputs: give --calib FILE.npz (or --calib-images DIR)")
    options = PlanOptions(ratio, scope, max_ratio, round_to, min_channels, exclude_patterns(exclude), heads_ratio,
                          ffn_ratio)
    options.validate()
    method = recover if recover is not None else ("all" if calib is not None else "none")
    check_method(method)
    if calib is None and (method != "none" or criterion in DATA_CRITERIA):
        what = f"--recover {method}" if method != "none" else f"--criterion {criterion}"
        raise OptionError(f"{what} needs calibration data: give --calib FILE.npz (or --calib-images DIR)")
    work = _load_work(model, shapes, registry, calib, calib_samples, progress)
    analysis, samples = work.analysis, work.samples
    prunable = [g for g in analysis.groups if g.prunable]
    stats = None
    if criterion in DATA_CRITERIA:
        from .activations import channel_stats

        taps = activation_inputs(analysis, prunable)
        by_tensor = channel_stats(work.working, {t: a for t, a in taps.values()}, samples,
                                  _stage(progress, "scores", samples))
        stats = {node: by_tensor[t] for node, (t, _) in taps.items()}
    scores = channel_scores(analysis, prunable, criterion, stats)
    plan = make_plan(analysis.groups, scores, options, analysis.spaces, _op_types(analysis))
    unmatched = unmatched_excludes(options.exclude, [m for g in prunable for m in g.members])
    for message in unmatched:
        warnings.warn(message, OnnxPruneWarning, stacklevel=2)
    settings = {**asdict(options), "exclude": list(options.exclude), "criterion": criterion, "recover": method,
                "calib_samples": samples.count if samples is not None else 0}
    return _carry_out(work, plan, settings, unmatched, (finetune, finetune_progress))


def _finetune_options(epochs: int):
    from .finetune.train import FinetuneOptions

    return FinetuneOptions(epochs=epochs)


@dataclass
class _Work:
    """A model loaded and analyzed, ready for a plan (what prune and apply_plan share)."""

    source: ModelSource
    working: onnx.ModelProto
    size_before: int
    dense_io: tuple
    analysis: Analysis
    cost_before: CostReport
    shapes: Optional[Mapping[str, Sequence[int]]]
    samples: Optional[SampleSet]
    progress: Progress
    calib_args: tuple = ()


def _load_work(model: ModelSource, shapes, registry, calib, calib_limit, progress) -> _Work:
    working, disk_bytes = _working_copy(model)
    samples = (calibration_samples(calib, working, calib_limit, _stage(progress, "calibration"))
               if calib is not None else None)
    size_before = disk_bytes if disk_bytes is not None else model_nbytes(working)
    dense_io = io_signature(working)
    sample = None if samples is None else {k: list(np.shape(v)) for k, v in next(samples.feeds(1)).items()}
    graph, analysis, cost_before = _analysis(working, shapes, registry, sample)
    if not any(g.prunable for g in analysis.groups):
        raise NothingToPruneError(_nothing_to_prune(analysis, cost_before))
    return _Work(model, working, size_before, dense_io, analysis, cost_before, shapes, samples, progress,
                 calibration_args(calib))


def _carry_out(work: _Work, plan: Plan, settings: dict, unmatched: Sequence[str] = (),
               finetune: tuple = (None, None)) -> PruneResult:
    """Rewrite the analyzed model as `plan` says, recover it when settings["recover"] asks, fine-tune it when
    `finetune` (options, progress) has options, and report (`unmatched`: the --exclude patterns that matched
    nothing, the report's warnings)."""
    tune_options, tune_progress = finetune
    analysis, method, samples = work.analysis, settings["recover"], work.samples
    keep = {g.space: plan.decisions[g.id].kept for g in analysis.groups if g.id in plan.decisions}
    reads = removed_reads(analysis, keep)
    dense = None
    if (method != "none" or tune_options is not None) and plan.pruned:
        dense = onnx.ModelProto()
        dense.CopyFrom(work.working)
    pruned = rewrite(analysis, keep)
    recovery = None
    if dense is not None and method != "none":
        recovery = recover_model(dense, analysis, keep, reads, samples, method,
                                 progress=_stage(work.progress, "recovery"))
    drop_unused(pruned)
    tuned = None
    if dense is not None and tune_options is not None:
        from .finetune.train import finetune as distill

        pruned, tuned = distill(pruned, dense, samples, options=tune_options, progress=tune_progress)
    del dense
    cost_before = work.cost_before
    cost_after = count_cost(pruned, cost_before.input_shapes)
    size_after = model_nbytes(pruned)
    notes = list(cost_before.notes) + _analysis_notes(analysis)
    if recovery is not None:
        notes.append(recovery.summary())
    elif plan.pruned:
        notes.append(NO_RECOVERY_NOTE)
    else:
        notes.append("no channel was removed: the groups are too small for --ratio/--round-to/--min-channels")
    report = PruneReport(
        before=Totals(cost_before.params, cost_before.macs, work.size_before),
        after=Totals(cost_after.params, cost_after.macs, size_after),
        groups=_group_reports(analysis, plan),
        options=settings,
        input_shapes=cost_before.input_shapes,
        notes=notes,
    )
    report.recovery = recovery.to_dict() if recovery is not None else None
    if tuned is not None:
        notes.append(tuned.summary())
        report.finetune = tuned.to_dict()
    report.warnings = list(unmatched)
    source = None if isinstance(work.source, onnx.ModelProto) else str(work.source)
    shapes = {k: list(v) for k, v in (work.shapes or {}).items()}
    return PruneResult(pruned, report, analysis, plan, reads, work.dense_io, recovery, source, shapes,
                       work.calib_args, tuned)


def apply_plan(
    model: ModelSource,
    plan: Union[str, "os.PathLike", PlanFile],
    *,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    registry: Optional[Registry] = None,
    calib: Optional[CalibSource] = None,
    progress: Progress = None,
) -> PruneResult:
    """Prune `model` exactly as a saved plan says (see planfile.py): the same model gives the same pruned model
    as the prune run that wrote the plan; a re-export of the same network (same weight names) an equivalent one.

    PlanMismatchError names the first place where the plan does not fit `model`. A plan made with recovery
    needs the same calibration data (`calib`); its first options["calib_samples"] samples are used, as then.
    `shapes` defaults to the plan's.
    """
    planned = plan if isinstance(plan, PlanFile) else PlanFile.load(plan)
    settings = dict(planned.options)
    settings.setdefault("recover", "none")
    method = settings["recover"]
    check_method(method)
    if method != "none" and calib is None:
        raise OptionError(f"the plan was made with --recover {method} on calibration data: give the same data with --calib")
    if method == "none" and calib is not None:
        raise OptionError("the plan was made without recovery: --calib is not used, drop it")
    if shapes is None and planned.shapes:
        shapes = planned.shapes
    limit = int(settings.get("calib_samples") or 0) or None
    work = _load_work(model, shapes, registry, calib, limit, progress)
    if work.samples is not None and limit is not None and work.samples.count != limit:
        raise OptionError(f"the plan was recovered on {limit} calibration samples, --calib holds {work.samples.count}")
    return _carry_out(work, planned.match(work.analysis), settings)


def pruning_plan(result: PruneResult, source_sha256: Optional[str] = None) -> PlanFile:
    """The plan of `result`, keyed by stable names, ready to save (PlanFile.save) and to apply_plan elsewhere.

    `source_sha256` defaults to the hash of the file `result` was pruned from (or, for an in-memory model,
    of the dense model's bytes: pass it when the ModelProto is gone)."""
    from .provenance import model_sha256, versions

    if source_sha256 is None:
        if result.source is None:
            raise OptionError("pruning_plan: the model was pruned in memory: pass source_sha256")
        source_sha256 = model_sha256(result.source)
    name = os.path.basename(result.source) if result.source else ""
    return plan_file(result.analysis, result.plan, result.report.options, source_sha256=source_sha256,
                     source_name=name, shapes=result.shapes, onnxprune=versions()["onnxprune"])


def calibration_args(calib: Optional[CalibSource]) -> tuple:
    """The prune options that name `calib` on the command line; () for data given in memory (or none)."""
    if isinstance(calib, (str, os.PathLike)):
        return ("--calib", str(calib))
    if not isinstance(calib, ImageFolder):
        return ()
    o = calib.options
    args = ["--calib-images", str(calib.folder)]
    if o.size is not None:
        args += ["--size", "x".join(map(str, o.size))]
    args += ["--mean", ",".join(f"{v:g}" for v in o.mean), "--std", ",".join(f"{v:g}" for v in o.std),
             "--layout", o.layout]
    return tuple(args)


def _stage(progress: Progress, stage: str, samples: Optional[SampleSet] = None):
    """Adapts the (stage, done, total) progress callback to one stage's callback."""
    if progress is None:
        return None
    if samples is not None:  # a single pass over the samples: the callback receives batch sizes
        done = [0]

        def one_pass(n: int) -> None:
            done[0] += n
            progress(stage, done[0], samples.count)

        return one_pass
    return lambda done, total: progress(stage, done, total)
