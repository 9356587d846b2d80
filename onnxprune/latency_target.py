"""`prune --latency-target F` / `--speedup S`: prune to a latency budget on the deployment runtime.

1. Scores (L1 by default, data-aware with calibration data) or a sensitivity file (sensitivity.py) say what each
   width of each group costs in importance; the latency profile (latency.py, measured or cached) says what it
   saves in milliseconds.
2. allocate.greedy_path lists the plans from dense to narrowest, least importance lost per millisecond saved
   first, one width at a time; the first plan predicted to meet the target is built by api.prune
   (plan.plan_widths keeps the best channels).
3. The pruned model is timed beside the dense one (bench.py). Within `tolerance` of the target (relative): done.
   Otherwise `next_plan` picks another plan on the path: moved by how far the measurement missed, then between
   the nearest plans measured too slow and too fast; steps 2-3 repeat (at most `max_steps`). The closest model
   is kept; when the narrowest plan is still too slow, or no plan lies between two measured ones, the report
   says so.
4. The report compares predicted and measured latency for the whole model and, for the groups that save the
   most, each group narrowed alone (timed in one more interleaved run).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import onnx

from . import api
from .allocate import Candidate, first_reaching, greedy_path, importance_lost
from .bench import bench
from .calib import CALIB_SAMPLES
from .errors import OptionError
from .importance import DEFAULT_CRITERION
from .io import load_model_sized
from .latency import DEFAULT_BUDGET_S, MIN_MAC_SHARE, Deployment, get_profile, narrowed
from .plan import PlanOptions, aligned_widths, excluded
from .tables import num, plain

DEFAULT_TOLERANCE = 0.05
DEFAULT_STEPS = 6
GROUPS_CHECKED = 8  # groups timed alone in the report (the ones predicted to save the most)


MODEL_MISS = 0.15  # predicted against measured fraction of dense: past this, the report says the model was off


@dataclass
class LatencyStep:
    step: int
    plan: int  # its index on the allocation's greedy path (0: dense)
    predicted_ms: float
    measured_fraction: float  # pruned median / dense median, timed side by side
    groups_narrowed: int


@dataclass
class GroupLatencyRow:
    group: int
    channels: int
    kept: int
    source: str  # latency model: measured ladder or MACs
    predicted_saved_ms: float
    measured_saved_ms: Optional[float] = None  # timed with only this group narrowed


@dataclass
class LatencyReport:
    target: float  # fraction of the dense latency
    tolerance: float
    deployment: dict
    importance: str  # where the importance came from
    dense_ms: float  # the profile's dense latency
    predicted_ms: float  # of the kept plan
    measured_fraction: float  # of the kept plan
    reached: bool
    noise: Optional[float]  # the control's reach in the run that measured the kept plan
    profile: str  # how the latency profile was obtained, and what it cost
    profile_path: Optional[str] = None
    steps: list[LatencyStep] = field(default_factory=list)
    groups: list[GroupLatencyRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    groups_noise: Optional[float] = None  # the control's reach in the run that timed the groups alone

    @property
    def predicted_fraction(self) -> float:
        return self.predicted_ms / self.dense_ms if self.dense_ms else 1.0

    @property
    def measured_ms(self) -> float:
        return self.measured_fraction * self.dense_ms

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(predicted_fraction=self.predicted_fraction, measured_ms=self.measured_ms)
        return data

    def format(self, headline: bool = True) -> str:
        """The verdict line (`headline`: the prune report's notes already carry it), then the numbers."""
        verdict = "reached" if self.reached else "NOT reached"
        lines = [
            f"latency target {self.target:g} of dense (±{self.tolerance * 100:g}%) on {self.deployment['provider']}, "
            f"batch {self.deployment['batch']}, {self.deployment['threads']} thread(s): {verdict}",
            f"  dense {self.dense_ms:.3f} ms; predicted {self.predicted_ms:.3f} ms ({self.predicted_fraction:.3f}); "
            f"measured {self.measured_ms:.3f} ms ({self.measured_fraction:.3f} of dense, noise "
            f"±{num(self.noise and self.noise * 100, '.1f')}%)",
            f"  importance: {self.importance}; {self.profile}",
        ]
        for s in self.steps:
            lines.append(f"  step {s.step}: plan {s.plan}, predicted {s.predicted_ms:.3f} ms "
                         f"({s.predicted_ms / self.dense_ms:.3f} of dense), measured {s.measured_fraction:.3f} of "
                         f"dense ({s.groups_narrowed} groups narrowed)")
        if self.groups:
            rows = [["group", "channels", "kept", "ladder", "predicted saved ms", "measured saved ms"]]
            for g in self.groups:
                rows.append([str(g.group), str(g.channels), str(g.kept), g.source, f"{g.predicted_saved_ms:.3f}",
                             num(g.measured_saved_ms, ".3f")])
            lines += ["  " + line for line in plain(rows, (3,))]
            if self.groups_noise is not None:
                lines.append(f"  measured saved ms: each group narrowed alone, timed beside dense; control noise "
                             f"±{self.groups_noise * 100:.1f}% (±{self.groups_noise * self.dense_ms:.3f} ms): smaller "
                             "differences, negative ones included, are noise")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines if headline else lines[1:])


def target_fraction(latency_target: Optional[float], speedup: Optional[float]) -> Optional[float]:
    """The target as a fraction of the dense latency, from --latency-target F or --speedup S (one of them)."""
    if latency_target is not None and speedup is not None:
        raise OptionError("latency_target and speedup say the same thing: give one", params=("latency_target", "speedup"))
    if speedup is not None:
        if not speedup > 1.0:
            raise OptionError(f"speedup must be more than 1, got {speedup}", params=("speedup",))
        return 1.0 / speedup
    if latency_target is not None and not 0.0 < latency_target < 1.0:
        raise OptionError(f"latency_target must be in (0, 1), a fraction of the dense latency, got {latency_target}",
                          params=("latency_target",))
    return latency_target


def next_plan(measured: Mapping[int, float], predicted: Sequence[float], target: float,
              dense_ms: float) -> tuple[Optional[int], str]:
    """The next plan to build and time, as an index into the greedy path (allocate.greedy_path; `predicted`: its
    plans' predicted ms, falling from the dense model at 0), from the fractions of dense measured so far (path
    index -> fraction); or None and the reason why no plan is left to try.

    Measured latency falls along the path, so once one plan measured too slow and a later one too fast, the next
    lies strictly between them (interpolated on the predicted latency); before that, the aim moves by the
    milliseconds the nearest measurement missed by, and at least one plan on."""
    last = len(predicted) - 1
    fast = [k for k, f in measured.items() if f < target]
    hi = min(fast) if fast else None
    slow = [k for k, f in measured.items() if f > target and (hi is None or k < hi)]
    lo = max(slow) if slow else None
    if lo is not None and hi is not None:
        if hi - lo <= 1:
            return None, (f"no plan lies between the one measured at {measured[lo]:.3f} of dense and the next, "
                          f"measured at {measured[hi]:.3f}; the closest is kept")
        aim = predicted[lo] + (predicted[hi] - predicted[lo]) * (target - measured[lo]) / (measured[hi] - measured[lo])
        return min(max(first_reaching(predicted, aim), lo + 1), hi - 1), ""
    if lo is not None:  # every plan measured so far is too slow
        if lo == last:
            return None, ("the target cannot be reached: every group is at the narrowest width allowed "
                          "(--max-ratio, --min-channels, --round-to); the closest model reached is kept")
        return max(first_reaching(predicted, predicted[lo] + (target - measured[lo]) * dense_ms), lo + 1), ""
    if hi <= 1:  # every plan measured so far is too fast, down to the first narrowing on the path
        return None, (f"the smallest narrowing the allocation makes already measured {measured[hi]:.3f} of dense, "
                      "faster than the target; it is kept")
    aim = predicted[hi] + (target - measured[hi]) * dense_ms
    return max(min(first_reaching(predicted, aim), hi - 1), 1), ""


def measure_fraction(dense: onnx.ModelProto, pruned: onnx.ModelProto, deployment: Deployment, shapes=None,
                     rounds: int = 8) -> tuple[float, Optional[float]]:
    """pruned / dense latency (the inverse of bench's speedup), timed side by side, and the control's noise."""
    pruned.graph.name = pruned.graph.name or "pruned"
    report = bench([dense, pruned], deployment.bench_config(shapes, rounds=rounds, runs=3))
    rows = [r for r in report.rows if r.status == "ok"]
    return 1.0 / rows[1].speedup, report.noise(rows)  # bench's paired per-round ratio


def prune_to_latency(
    model,
    target: float,
    deployment: Deployment = Deployment(),
    *,
    criterion: str = DEFAULT_CRITERION,
    calib=None,
    calib_samples: Optional[int] = CALIB_SAMPLES,
    recover: Optional[str] = None,
    sensitivity: Optional[Mapping] = None,
    round_to: int = PlanOptions.round_to,
    min_channels: int = PlanOptions.min_channels,
    max_ratio: float = PlanOptions.max_ratio,
    exclude: Sequence[str] = (),
    shapes: Optional[Mapping] = None,
    cache_dir=None,
    profile_file=None,
    budget_s: float = DEFAULT_BUDGET_S,
    min_mac_share: float = MIN_MAC_SHARE,
    tolerance: float = DEFAULT_TOLERANCE,
    max_steps: int = DEFAULT_STEPS,
    check_rounds: int = 8,
    groups_checked: int = GROUPS_CHECKED,
    progress: Optional[Callable[[str], None]] = None,
    warn: Optional[Callable[[str], None]] = None,
    finetune_epochs: int = 0,
    finetune=None,
    finetune_progress=None,
) -> api.PruneResult:
    """Prune `model` so that it runs in `target` x the dense latency on `deployment`; the result's
    report.latency is a LatencyReport. `sensitivity`: a sensitivity.py report (as a dict) used in place of
    channel scores to say what each width loses. `finetune_epochs` / `finetune` / `finetune_progress` as in
    api.prune: the kept model is fine-tuned once the loop has chosen it (its widths, so its latency, stay)."""
    say = progress or (lambda _m: None)
    if not 0.0 < target < 1.0:
        raise OptionError(f"the latency target must be in (0, 1) of the dense latency, got {target}")
    if not 0.0 < tolerance < 1.0 or max_steps < 1:
        raise OptionError("the tolerance must be in (0, 1) and at least one step is needed")
    deployment.validate()
    finetune = api.finetune_settings(finetune_epochs, finetune, calib)
    source, disk_bytes = load_model_sized(model)
    say("analysis and scores")
    work = api._load_work(source, shapes, None, calib, calib_samples, None)
    analysis, cost, samples, scores = work.analysis, work.cost_before, work.samples, api._scores(work, criterion)
    groups = [g for g in analysis.groups if g.prunable and not excluded(g, exclude)]
    widths_of = {g.id: aligned_widths(g, analysis.spaces, round_to, min_channels, max_ratio) for g in groups}
    widths_of = {g: w for g, w in widths_of.items() if len(w) > 1}
    if not widths_of:
        raise OptionError("no group can be narrowed: the groups are too small for --round-to/--min-channels/"
                          "--max-ratio (or all are excluded)")
    profile = get_profile(source, widths_of, api.group_macs(analysis, cost), cost.macs, deployment, shapes=shapes,
                          cache_dir=cache_dir, profile_file=profile_file, budget_s=budget_s,
                          min_mac_share=min_mac_share, progress=lambda m: say(f"latency ladder: {m}"), warn=warn)
    if sensitivity is not None:
        from .sensitivity import loss_table

        losses = {g: loss_table(sensitivity, g, widths_of[g], source) for g in widths_of}
        importance = "sensitivity (relative output error of each group narrowed alone)"
    else:
        losses = {g: importance_lost(scores[g], widths_of[g]) for g in widths_of}
        importance = f"{criterion} channel scores"
    candidates = [Candidate(g, list(ws), losses[g], [profile.groups[g].saved(w) for w in ws])
                  for g, ws in widths_of.items()]
    del analysis, work
    path = greedy_path(candidates, profile.dense_ms)
    predicted = [p.predicted_ms for p in path]
    if len(path) == 1:
        raise OptionError(f"the latency model predicts no saving for any group at {deployment.provider}, "
                          f"batch {deployment.batch}: nothing to prune for a latency target")
    k = max(first_reaching(predicted, target * profile.dense_ms), 1)

    def build(plan, **tuning) -> api.PruneResult:
        return api.prune(source, widths=plan.widths, criterion=criterion, calib=samples,
                         calib_samples=calib_samples, recover=recover, round_to=round_to, min_channels=min_channels,
                         max_ratio=max_ratio, exclude=exclude, shapes=shapes, **tuning)

    steps: list[LatencyStep] = []
    best = None  # (distance, result, allocation, fraction, noise)
    measured: dict[int, float] = {}  # path index -> measured fraction of dense
    notes = list(profile.notes)
    for step in range(1, max_steps + 1):
        plan = path[k]
        say(f"step {step}: {len(plan.widths)} groups narrowed, predicted {plan.predicted_ms:.3f} ms "
            f"(plan {k} of {len(path) - 1} on the allocation's path); building and timing")
        result = build(plan)
        fraction, noise = measure_fraction(source, result.model, deployment, shapes, check_rounds)
        steps.append(LatencyStep(step, k, plan.predicted_ms, fraction, len(plan.widths)))
        say(f"step {step}: measured {fraction:.3f} of dense (target {target:g})")
        distance = abs(fraction - target)
        if best is None or distance < best[0]:
            best = (distance, result, plan, fraction, noise)
        else:
            del result
        if distance <= tolerance * target:
            break
        measured[k] = fraction
        k, why = next_plan(measured, predicted, target, profile.dense_ms)
        if k is None:
            notes.append(why)
            break
    else:
        notes.append(f"measured {best[3]:.3f} of dense at best after {max_steps} steps: outside "
                     f"±{tolerance * 100:g}% of {target:g}; the closest model reached is kept")
    _, result, plan, fraction, noise = best
    if finetune is not None:  # the same plan again, then distilled from the dense model on the same samples
        say("fine-tuning the kept model")
        result = build(plan, finetune=finetune, finetune_progress=finetune_progress)
    reached = abs(fraction - target) <= tolerance * target
    off = max(steps, key=lambda s: abs(s.predicted_ms / profile.dense_ms - s.measured_fraction))
    if abs(off.predicted_ms / profile.dense_ms - off.measured_fraction) > MODEL_MISS:
        notes.append(f"the latency model was far off here: it predicted {off.predicted_ms / profile.dense_ms:.2f} "
                     f"of dense for step {off.step}'s plan, measured {off.measured_fraction:.3f}; it adds up savings "
                     "measured one group at a time, which overlap when several groups narrow at once, so its predictions "
                     "only order the plans: the measurements decide")
    if noise is not None and noise > tolerance:
        notes.append(f"the control row's noise (±{noise * 100:.0f}%) exceeds the ±{tolerance * 100:g}% tolerance: "
                     "this machine was too busy for the measurements to confirm or refute the target; rerun where "
                     "it is quiet")
    rows, groups_noise = _group_rows(source, plan.widths, profile, deployment, shapes, groups_checked, say)
    report = LatencyReport(target, tolerance, asdict(deployment), importance, profile.dense_ms, plan.predicted_ms,
                           fraction, reached, noise, profile.cost_text(), profile.path, steps, rows, notes,
                           groups_noise)
    if disk_bytes is not None:  # the steps pruned the file's copy in memory: the result names the file, its size
        result.source, result.calib_args = str(model), api.calibration_args(calib)  # on disk and its data
        result.report.before.size_bytes = disk_bytes
    result.report.latency = report.to_dict()
    result.report.notes.append(report.format().splitlines()[0])  # the verdict line
    result.latency = report
    return result


def _group_rows(source, widths: Mapping[int, int], profile, deployment: Deployment, shapes, checked: int,
                say) -> tuple[list[GroupLatencyRow], Optional[float]]:
    """Predicted saving of every narrowed group; for the `checked` ones predicted to save the most, the saving
    measured with only that group narrowed (one interleaved run beside the dense model), and that run's control
    noise (None when no group was timed)."""
    rows = [GroupLatencyRow(g, profile.groups[g].size, w, profile.groups[g].source, profile.groups[g].saved(w))
            for g, w in widths.items()]
    rows.sort(key=lambda r: -r.predicted_saved_ms)
    timed = rows[:max(checked, 0)]
    if timed:
        say(f"timing the {len(timed)} groups that save the most, each narrowed alone")
        models = [source]
        for r in timed:
            m = narrowed(source, {r.group: r.kept}, shapes)
            m.graph.name = f"group{r.group}_w{r.kept}"
            models.append(m)
        report = bench(models, deployment.bench_config(shapes, rounds=4, runs=3))
        speedups = [r.speedup for r in report.rows if r.status == "ok" and not r.control]
        for r, speedup in zip(timed, speedups[1:]):
            r.measured_saved_ms = profile.dense_ms * (1.0 - 1.0 / speedup)
        return rows, report.noise([r for r in report.rows if r.status == "ok"])
    return rows, None
