"""The Python API: `analyze` and `prune`, the same operations the CLI runs."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from .block_scores import WEIGHT_PROXY_NOTE, blocks_to_remove, data_scores, weight_scores
from .blocks import Block, find_blocks, removable
from .calib import CALIB_SAMPLES, MIN_CALIB_SAMPLES, ImageFolder, SampleSet, from_feeds, load_images, load_npz
from .cost import CostReport, count_cost
from .deps.context import Analysis, analyze as _analyze, declined_layers, no_group_reason, subgraph_reason
from .deps.ops import default_registry
from .deps.rules import Registry
from .errors import NothingToPruneError, OnnxPruneWarning, OptionError
from .fold import fold_constants
from .graph import Graph, drop_unused
from .importance import DATA_CRITERIA, DEFAULT_CRITERION, activation_inputs, channel_scores
from .inputs import counting_shapes, generic_input_shapes
from .io import ModelSource, load_model_sized, model_nbytes
from .oracle import removed_reads
from .plan import (Plan, PlanOptions, exclude_patterns, excluded, kind_of, make_plan, plan_widths, unit_of,
                   unmatched_excludes)
from .planfile import PlanFile, match_blocks, plan_file, planned_block
from .depth import remove_blocks as drop_blocks
from .kernels import block_kernels
from .report import AnalysisReport, BlockReport, DepthReport, GroupReport, PruneReport, Totals
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
RECOVERY_OFF_NOTE = (
    "--recover none: the pruned model was not recovered on the calibration data: accuracy usually drops sharply "
    "right after pruning; recover it (--recover all, the default with data) or fine-tune it"
)


@dataclass
class PruneResult:
    model: onnx.ModelProto
    report: PruneReport
    analysis: Optional[Analysis]  # of the width stage, on the dense model it left unchanged (None: blocks only)
    plan: Optional[Plan]
    masked_reads: dict  # (weight, axis) -> removed positions: the masking oracle's input (see oracle.py)
    dense_io: tuple  # the dense model's inputs and outputs (validate.io_signature), which must not change
    recovery: Optional[RecoveryReport] = None
    source: Optional[str] = None  # the path the model was read from (None for a ModelProto)
    shapes: dict = field(default_factory=dict)  # the input shapes given (pinned dims)
    calib_args: tuple = ()  # the prune options that name the calibration data: ("--calib", path), ... ; () in memory
    removed_blocks: list = field(default_factory=list)  # blocks.Block removed before the width stage (oracle.py)
    latency: Optional[object] = None  # latency_target.LatencyReport under a latency target
    finetune: Optional["FinetuneReport"] = None  # onnxprune.finetune.train.FinetuneReport
    search: Optional[object] = None  # policy_search.SearchReport after a search within a policy

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
    """`model` folded in place (see `_indexed`) and analyzed; the analysis holds `model` and never changes it."""
    graph, cost = _indexed(model, shapes, sample)
    return graph, _analyze(graph, registry or default_registry()), cost


def _indexed(model: onnx.ModelProto, shapes, sample=None) -> tuple[Graph, CostReport]:
    """Folds constants into `model` in place (the caller's own copy), then returns its index and cost. The index
    works with every dim nobody pinned at a generic size (see inputs.generic_sizes), so that the analysis (its groups
    and plan, the blocks found) is that of a pinned model; MACs are counted at inputs.counting_shapes, which the
    report states (`sample`: one calibration feed's input shapes)."""
    fold_constants(model)
    generic = generic_input_shapes(model, shapes)
    info, at_generic = infer_generic_shapes(model, generic, shapes)
    graph = Graph(model, shapes=info)  # names unnamed nodes, as the cost report does
    counted, notes = counting_shapes(model, shapes, sample)
    if not at_generic:
        notes.append(GENERIC_SIZES_FAIL)
    cost = count_cost(model, counted)
    cost.notes[:0] = notes
    return graph, cost


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


def _why_nothing_removed(plan: Plan) -> str:
    """The real cause when a plan keeps every channel: every group excluded, every ratio 0, or rounding."""
    o, decisions = plan.options, list(plan.decisions.values())
    if decisions and all(d.note.startswith("excluded by") for d in decisions):
        return "no channel was removed: every prunable group is excluded (--exclude)"
    ratios = [o.ratio] + [r for r in (o.heads_ratio, o.ffn_ratio) if r is not None]
    if not any(ratios):
        return "no channel was removed: the ratios are 0 (--ratio, --heads-ratio, --ffn-ratio)"
    sizes = sorted(d.size for d in decisions if not d.note) or sorted(d.size for d in decisions)
    span = f"{sizes[0]}" if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"
    given = [f"--ratio {o.ratio:g}"] + [f"--{name} {r:g}" for name, r in (("heads-ratio", o.heads_ratio),
                                                                         ("ffn-ratio", o.ffn_ratio)) if r is not None]
    return (f"no channel was removed: each of the {len(sizes)} prunable groups ({span} channels or heads) rounds "
            f"back to its full size at {', '.join(given)}, --round-to {o.round_to}, --min-channels {o.min_channels} "
            "(a smaller --round-to or a larger ratio removes some)")


def _nothing_to_prune(analysis: Analysis, cost: CostReport, shown: int = 2) -> str:
    """Why no group can be pruned: the reasons of the groups that hold the most MACs first."""
    if not analysis.groups:
        return "nothing to prune: no channel group of this model can be pruned; " + no_group_reason(analysis)
    by_macs = sorted(analysis.groups, key=lambda g: _macs_of(g, cost), reverse=True)
    reasons = list(dict.fromkeys(g.reasons[0] for g in by_macs if g.reasons))
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
    search = find_blocks(graph)
    kernels, kernels_total, why = block_kernels(working, search.blocks)
    if not search.blocks:
        notes.append(f"no removable block (depth pruning): {search.why_none()}")
    elif why:
        notes.append(why)
    return AnalysisReport(
        groups=_group_reports(analysis),
        totals=Totals(cost.params, cost.macs),
        prunable_macs=prunable_macs,
        prunable_macs_both_sides=both_sides,
        input_shapes=cost.input_shapes,
        notes=notes,
        blocks=_block_reports(search.blocks, cost, kernels=kernels),
        kernels_total=kernels_total or None,
    )


def _block_reports(blocks: list[Block], cost: CostReport, kernels=None, scores=None, removed=()) -> list[BlockReport]:
    gone = {b.add for b in removed}
    out = []
    for i, b in enumerate(blocks):
        costs = [cost.per_node[n] for n in b.nodes if n in cost.per_node]
        out.append(BlockReport(b.label, b.add, len(b.nodes), sum(c.params for c in costs), sum(c.macs for c in costs),
                               kernels[i] if kernels else None, scores[i] if scores else None, b.add in gone))
    return out


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
    ratio: Optional[float] = None,
    scope: str = PlanOptions.scope,
    criterion: str = DEFAULT_CRITERION,
    max_ratio: float = PlanOptions.max_ratio,
    round_to: int = PlanOptions.round_to,
    min_channels: int = PlanOptions.min_channels,
    exclude: Optional[Sequence[str]] = (),
    heads_ratio: Optional[float] = None,
    ffn_ratio: Optional[float] = None,
    depth_ratio: Optional[float] = None,
    remove_blocks: Optional[int] = None,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    registry: Optional[Registry] = None,
    calib: Optional[CalibSource] = None,
    calib_samples: Optional[int] = CALIB_SAMPLES,
    recover: Optional[str] = None,
    progress: Progress = None,
    widths: Optional[Mapping[int, int]] = None,
    width_notes: Optional[Mapping[int, str]] = None,
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
    are loaded), "blocks" (samples run to score residual blocks), "scores" (samples run for a data-aware
    criterion), "recovery" (samples run, over all passes).

    Depth pruning: `depth_ratio` (a fraction of the removable residual blocks, rounded up) or `remove_blocks` (a
    count) removes whole blocks y = x + f(x) first (blocks.py; scored by ||f(x)|| / ||x|| on `calib`, else by a
    weight proxy), then the width stage prunes the smaller graph. `ratio` defaults to PlanOptions.ratio, or to 0
    (blocks only) when a depth option is given. `exclude` keeps matching blocks too.
    `widths` (group id -> channels kept, from plan.aligned_widths; latency_target.py chooses them) replaces
    the ratio: the listed groups keep that many channels, the others all of theirs.
    `finetune_epochs` > 0 (or `finetune`, a finetune.train.FinetuneOptions) then trains the pruned model by
    distillation from the dense one on the same calibration samples (needs onnxprune[finetune]; see
    onnxprune/finetune/train.py); `finetune_progress` is a finetune.train.Progress.
    """
    depth = depth_ratio is not None or remove_blocks is not None
    if depth:
        blocks_to_remove(1, depth_ratio, remove_blocks)  # the options' checks, before any work
    if ratio is None:
        ratio = 0.0 if depth else PlanOptions.ratio
    width = not depth or ratio > 0 or bool(heads_ratio) or bool(ffn_ratio)
    finetune = finetune_settings(finetune_epochs, finetune, calib)
    options = PlanOptions(ratio, scope, max_ratio, round_to, min_channels, exclude_patterns(exclude), heads_ratio,
                          ffn_ratio)
    options.validate()
    method = recover if recover is not None else ("all" if calib is not None and width else "none")
    check_method(method)
    if calib is None and (method != "none" or criterion in DATA_CRITERIA):
        what = f"--recover {method}" if method != "none" else f"--criterion {criterion}"
        raise OptionError(f"{what} needs calibration data: give --calib FILE.npz (or --calib-images DIR)")
    if not width and (method != "none" or criterion in DATA_CRITERIA):
        what = f"--recover {method}" if method != "none" else f"--criterion {criterion}"
        raise OptionError(f"{what} is for channel pruning: give --ratio (blocks alone are scored on --calib)")
    blocks = _BlockOptions(depth_ratio, remove_blocks, options.exclude) if depth else None
    work = _load_work(model, shapes, registry, calib, calib_samples, progress, blocks, width,
                      keep_dense=finetune is not None)
    analysis, samples = work.analysis, work.samples
    plan, names = None, list(work.block_names)
    if width:
        prunable = [g for g in analysis.groups if g.prunable]
        scores = _scores(work, criterion)
        if widths is not None:
            plan = plan_widths(analysis.groups, scores, widths, options, width_notes)
        else:
            plan = make_plan(analysis.groups, scores, options, analysis.spaces, _op_types(analysis))
        names += [m for g in prunable for m in g.members]
    what = ("node of a prunable group or residual block" if depth and width else
            "node of a residual block" if depth else "node of a prunable group")
    unmatched = unmatched_excludes(options.exclude, names, what)
    for message in unmatched:
        warnings.warn(message, OnnxPruneWarning, stacklevel=2)
    settings = {**asdict(options), "exclude": list(options.exclude), "criterion": criterion, "recover": method,
                "calib_samples": samples.count if samples is not None else 0}
    settings.update(depth_ratio=depth_ratio, remove_blocks=remove_blocks)
    return _carry_out(work, plan, settings, unmatched, (finetune, finetune_progress))


def finetune_settings(epochs: int, options: Optional["FinetuneOptions"], calib) -> Optional["FinetuneOptions"]:
    """The fine-tuning options that `finetune_epochs` (or `finetune`) ask for, checked before any work; None: no
    fine-tuning."""
    if epochs and options is not None:
        raise OptionError("give the epoch count in the fine-tuning options or as finetune_epochs, not both")
    if epochs < 0:
        raise OptionError(f"finetune_epochs must not be negative, got {epochs}", params=("finetune_epochs",))
    if options is None and epochs:
        from .finetune.train import FinetuneOptions

        options = FinetuneOptions(epochs=epochs)
    if options is not None and calib is None:
        raise OptionError("fine-tuning needs training inputs: give --calib FILE.npz (or --calib-images DIR)")
    return options


@dataclass
class _BlockOptions:
    """What the depth stage removes: `depth_ratio` of the blocks or `count` of them, none matching `exclude`."""

    depth_ratio: Optional[float]
    count: Optional[int]
    exclude: tuple[str, ...]
    planned: Optional[list] = None  # a plan's removed blocks (planfile.planned_block): these, not the lowest scored


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
    depth: Optional[DepthReport] = None  # the depth stage's report (blocks removed from `working`)
    removed_blocks: list = field(default_factory=list)
    cost_dense: Optional[CostReport] = None  # the cost before the depth stage
    block_names: list = field(default_factory=list)  # every block's nodes (for --exclude's check)
    before_depth: Optional[onnx.ModelProto] = None  # a copy of the model before the depth stage (fine-tuning's teacher)


def _load_work(model: ModelSource, shapes, registry, calib, calib_limit, progress,
               blocks: Optional[_BlockOptions] = None, width: bool = True, keep_dense: bool = False) -> _Work:
    """The model loaded (prune's own copy); with `blocks`, the depth stage done on it in place (with `keep_dense`,
    on a copy kept as the dense reference); with `width`, the result folded in place and analyzed."""
    working, disk_bytes = _working_copy(model)
    samples = (calibration_samples(calib, working, calib_limit, _stage(progress, "calibration"))
               if calib is not None else None)
    size_before = disk_bytes if disk_bytes is not None else model_nbytes(working)
    dense_io = io_signature(working)
    sample = None if samples is None else {k: list(np.shape(v)) for k, v in next(samples.feeds(1)).items()}
    depth, removed, cost_dense, names, before_depth = None, [], None, [], None
    if blocks is not None:
        if keep_dense:
            before_depth = onnx.ModelProto()
            before_depth.CopyFrom(working)
        depth, removed, cost_dense, names = _remove_blocks(working, shapes, sample, blocks, samples, progress)
    analysis, cost_before = None, cost_dense
    if width:
        graph, analysis, cost_before = _analysis(working, shapes, registry, sample)
        if not any(g.prunable for g in analysis.groups):
            raise NothingToPruneError(_nothing_to_prune(analysis, cost_before))
    return _Work(model, working, size_before, dense_io, analysis, cost_before, shapes, samples, progress,
                 calibration_args(calib), depth, removed, cost_dense, names, before_depth)


def _remove_blocks(working: onnx.ModelProto, shapes, sample, options: _BlockOptions, samples, progress):
    """Depth stage, in place: removes the lowest-scored residual blocks (none with a node matching an --exclude
    glob). Returns (report, removed blocks, the dense model's cost, every block's node names)."""
    graph, cost = _indexed(working, shapes, sample)
    search = find_blocks(graph)
    if not search.blocks:
        raise NothingToPruneError(f"nothing to prune: no removable block: {search.why_none()}")
    kept_by = {b.add: excluded([*b.nodes, b.add], options.exclude) for b in search.blocks}
    eligible = [b for b in search.blocks if not kept_by[b.add]]
    if not eligible:
        raise NothingToPruneError(f"nothing to prune: every removable block ({len(search.blocks)}) has a node "
                                  f"matching --exclude {' '.join(options.exclude)}")
    if options.planned is not None:
        scores = weight_scores(graph, search.blocks)  # for the report only: the plan chose
        chosen = match_blocks(options.planned, search.blocks)
    else:
        count = blocks_to_remove(len(eligible), options.depth_ratio, options.count)
        if samples is not None:
            scores = data_scores(working, search.blocks, samples, _stage(progress, "blocks", samples))
        else:
            scores = weight_scores(graph, search.blocks)
        ranked = sorted(range(len(scores)), key=lambda i: scores[i])
        chosen = removable([search.blocks[i] for i in ranked if not kept_by[search.blocks[i].add]], count)
    kernels, total, _ = block_kernels(working, search.blocks)
    reports = _block_reports(search.blocks, cost, kernels=kernels, scores=scores, removed=chosen)
    for block, report in zip(search.blocks, reports):
        report.note = f"excluded by {kept_by[block.add]}" if kept_by[block.add] else ""
    scored_by = "the plan" if options.planned is not None else "calibration" if samples is not None else "weights"
    report = DepthReport(reports, scored_by, total or None)
    drop_blocks(working, chosen)
    return report, chosen, cost, [name for b in search.blocks for name in (*b.nodes, b.add)]


def _carry_out(work: _Work, plan: Optional[Plan], settings: dict, unmatched: Sequence[str] = (),
               finetune: tuple = (None, None)) -> PruneResult:
    """Rewrite the analyzed model as `plan` says (None: blocks only, already removed), recover it when
    settings["recover"] asks, fine-tune it when `finetune` (options, progress) has options, and report
    (`unmatched`: the --exclude patterns that matched nothing, the report's warnings). The analyzed model stays
    dense (the rewrite is a new model, which recovery then changes in place): the result's analysis describes it,
    and recovery reads it as the reference; fine-tuning learns from the model before the depth stage, if any."""
    tune_options, tune_progress = finetune
    analysis, method, samples = work.analysis, settings["recover"], work.samples
    reads, recovery, pruned, tuned = {}, None, work.working, None
    if plan is not None:
        keep = {g.space: plan.decisions[g.id].kept for g in analysis.groups if g.id in plan.decisions}
        reads = removed_reads(analysis, keep)
        pruned = rewrite(analysis, keep)
        if method != "none" and plan.pruned:
            recovery = recover_model(pruned, analysis, keep, reads, samples, method,
                                     progress=_stage(work.progress, "recovery"))
    drop_unused(pruned)
    if tune_options is not None and ((plan is not None and plan.pruned) or work.removed_blocks):
        from .finetune.train import finetune as distill

        teacher = work.before_depth if work.before_depth is not None else analysis.graph.model
        pruned, tuned = distill(pruned, teacher, samples, options=tune_options, progress=tune_progress)
    if work.depth is not None and work.depth.kernels_before:
        work.depth.kernels_after = block_kernels(pruned, [])[1] or None
    cost_before = work.cost_dense or work.cost_before
    cost_after = count_cost(pruned, cost_before.input_shapes)
    size_after = model_nbytes(pruned)
    notes = list(cost_before.notes) + (_analysis_notes(analysis) if analysis is not None else [])
    if work.depth is not None and work.depth.scored_by == "weights":
        notes.append(WEIGHT_PROXY_NOTE)
    if recovery is not None:
        notes.append(recovery.summary())
    elif plan is not None and plan.pruned:
        notes.append(NO_RECOVERY_NOTE if samples is None else RECOVERY_OFF_NOTE)
    elif plan is not None:
        notes.append(_why_nothing_removed(plan))
    report = PruneReport(
        before=Totals(cost_before.params, cost_before.macs, work.size_before),
        after=Totals(cost_after.params, cost_after.macs, size_after),
        groups=_group_reports(analysis, plan) if plan is not None else [],
        options=settings,
        input_shapes=cost_before.input_shapes,
        notes=notes,
        depth=work.depth,
    )
    report.recovery = recovery.to_dict() if recovery is not None else None
    if tuned is not None:
        notes.append(tuned.summary())
        report.finetune = tuned.to_dict()
    report.warnings = list(unmatched) + (tuned.warnings if tuned is not None else [])
    source = None if isinstance(work.source, onnx.ModelProto) else str(work.source)
    shapes = {k: list(v) for k, v in (work.shapes or {}).items()}
    return PruneResult(pruned, report, analysis, plan, reads, work.dense_io, recovery, source, shapes,
                       work.calib_args, work.removed_blocks, finetune=tuned)


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
    if shapes is None and planned.shapes:
        shapes = planned.shapes
    limit = int(settings.get("calib_samples") or 0) or None
    blocks = _BlockOptions(None, None, (), planned.blocks) if planned.blocks else None
    width = bool(planned.groups) or blocks is None
    work = _load_work(model, shapes, registry, calib if method != "none" else None, limit, progress, blocks, width)
    # a plan that does not fit the model says so before the data matters
    matched = planned.match(work.analysis) if width else None
    if method != "none" and calib is None:
        raise OptionError(f"the plan was made with --recover {method} on calibration data: give the same data with --calib")
    if method == "none" and calib is not None:
        raise OptionError("the plan was made without recovery: --calib is not used, drop it")
    if work.samples is not None and limit is not None and work.samples.count != limit:
        raise OptionError(f"the plan was recovered on {limit} calibration samples, --calib holds {work.samples.count}")
    return _carry_out(work, matched, settings)


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
    shapes = {k: list(v) for k, v in result.shapes.items()}
    if result.plan is not None:
        planned = plan_file(result.analysis, result.plan, result.report.options, source_sha256=source_sha256,
                            source_name=name, shapes=shapes, onnxprune=versions()["onnxprune"])
    else:  # blocks only
        planned = PlanFile(source_sha256, dict(result.report.options), [], shapes, versions()["onnxprune"], name)
    planned.blocks = [planned_block(b) for b in result.removed_blocks]
    return planned


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


def _scores(work: _Work, criterion: str) -> dict[int, np.ndarray]:
    """The channel scores of every prunable group of `work` (a data-aware criterion runs its samples)."""
    prunable = [g for g in work.analysis.groups if g.prunable]
    stats = None
    if criterion in DATA_CRITERIA:
        from .activations import channel_stats

        taps = activation_inputs(work.analysis, prunable)
        by_tensor = channel_stats(work.working, {t: a for t, a in taps.values()}, work.samples,
                                  _stage(work.progress, "scores", work.samples))
        stats = {node: by_tensor[t] for node, (t, _) in taps.items()}
    return channel_scores(work.analysis, prunable, criterion, stats)


def group_macs(analysis: Analysis, cost: CostReport) -> dict[int, int]:
    """MACs of the nodes that produce or read each prunable group's channels (what narrowing it shrinks)."""
    return {g.id: _macs_of(g, cost) for g in analysis.groups if g.prunable}


def _macs_of(group, cost: CostReport) -> int:
    nodes = {p.node for p in group.places if p.role in ("in", "out")}
    return sum(c.macs for name, c in cost.per_node.items() if name in nodes)


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
