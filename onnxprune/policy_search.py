"""`prune --within POLICY`: prune as far as a check policy's fidelity thresholds allow.

The search works on a copy: the model given is not changed.

1. The policy (gate.CheckPolicy, the file `check --policy` reads) says what may not change: its fidelity
   thresholds (--max-accuracy-drop with --labels, --max-rel-error, --min-top1, ...), judged on its --data (or
   random inputs, with a note that says what that means).
2. Each probe prunes the model at one --ratio of a grid (STEP apart, up to --max-ratio) with every other prune
   option, recovery on the calibration data included, and compares it with the dense model exactly as `check`
   does (verify.compare and the same gates).
3. Fidelity falls as the ratio rises, nearly always; the search bisects the grid on that assumption (about
   log2 of the grid's length in probes) and keeps the highest ratio that passed. Every probe is in the report,
   so a model for which the assumption fails shows it.

The policy's other thresholds (speed, size, MACs) are not searched: `check` judges them on the written model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Union

from . import api
from .errors import OptionError, VerificationError
from .gate import CheckPolicy, fidelity_criteria, fidelity_data, fidelity_notes
from .io import ModelSource, load_model_sized
from .plan import PlanOptions
from .tables import plain

STEP = 0.05  # the grid of ratios probed


@dataclass
class Probe:
    ratio: float
    passed: bool
    macs_ratio: float  # pruned / dense MACs
    criteria: str  # each fidelity threshold: measured value and verdict


@dataclass
class SearchReport:
    policy: str  # where the thresholds came from
    inputs: str  # what they were judged on
    thresholds: dict
    ratio: float  # the highest ratio that passed
    probes: list[Probe] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self, headline: bool = True) -> str:
        """The verdict line (`headline`: the prune report's notes already carry it), then every probe."""
        limits = ", ".join(f"{k} {v:g}" for k, v in self.thresholds.items())
        lines = [f"{self.policy}: ratio {self.ratio:g} is the highest that passes {limits} on {self.inputs} "
                 f"({len(self.probes)} probes)"]
        rows = [["ratio", "MACs kept", "fidelity", "verdict"]]
        for p in sorted(self.probes, key=lambda p: p.ratio):
            rows.append([f"{p.ratio:g}", f"{p.macs_ratio:.3f}", p.criteria, "pass" if p.passed else "FAIL"])
        lines += ["  " + line for line in plain(rows, (2, 3))]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines if headline else lines[1:])


def grid(max_ratio: float, step: float = STEP) -> list[float]:
    """The ratios probed: step, 2 step, ... up to max_ratio."""
    return [round(step * k, 6) for k in range(1, int(max_ratio / step + 1e-9) + 1)]


def bisect(ratios: list[float], passes: Callable[[float], bool]) -> Optional[int]:
    """The index of the highest ratio that passes, assuming a ratio passes only if every lower one does (None:
    even the first fails). Ratio 0, the dense model, passes by definition."""
    lo, hi = -1, len(ratios)  # lo: highest known to pass; hi: lowest known to fail
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(ratios[mid]):
            lo = mid
        else:
            hi = mid
    return lo if lo >= 0 else None


def prune_within(
    model: ModelSource,
    policy: CheckPolicy,
    *,
    policy_label: str = "the policy",
    calib=None,
    calib_samples: Optional[int] = api.CALIB_SAMPLES,
    max_ratio: float = PlanOptions.max_ratio,
    step: float = STEP,
    progress: Optional[Callable[[str], None]] = None,
    **options,
) -> api.PruneResult:
    """The model pruned at the highest --ratio (on a grid `step` apart, up to `max_ratio`) whose fidelity passes
    `policy`'s thresholds; `options` are api.prune's (not ratio, widths or fine-tuning). The result's
    report.search is a SearchReport.to_dict(), and result.search the SearchReport. VerificationError when even
    the lowest ratio fails."""
    from .verify import compare

    say = progress or (lambda _m: None)
    for name in ("ratio", "widths", "finetune", "finetune_epochs"):
        if options.get(name):
            raise OptionError(f"{name} and a search within a policy both decide the result: give one",
                              params=(name,))
    policy.validate(policy_label)
    if not policy.gates.any:
        raise OptionError(f"{policy_label} has no fidelity threshold (max-accuracy-drop, max-rel-error, min-top1, "
                          "min-cosine, max-abs): nothing says how far pruning may go")
    if not 0.0 < step <= max_ratio < 1.0:
        raise OptionError(f"the search needs 0 < step <= max_ratio < 1, got step {step} and max_ratio {max_ratio}",
                          params=("max_ratio",))
    source, disk_bytes = load_model_sized(model)
    data = fidelity_data(policy, source)
    samples = api.calibration_samples(calib, source, calib_samples) if calib is not None else None
    shapes = options.get("shapes")
    ratios = grid(max_ratio, step)
    probes: dict[float, Probe] = {}
    kept: dict[float, tuple] = {}  # the highest ratio that passed so far -> (its PruneResult, its VerifyReport)

    def passes(ratio: float) -> bool:
        say(f"probe {len(probes) + 1}: ratio {ratio:g}: pruning")
        result = api.prune(source, ratio=ratio, max_ratio=max_ratio, calib=samples, calib_samples=calib_samples,
                           **options)
        report = compare(source, result.model, data.feeds, gates=policy.gates, labels=data.labels,
                         inputs=data.inputs)
        criteria = fidelity_criteria(report)
        passed = all(c.status == "pass" for c in criteria)
        macs = result.report.after.macs / result.report.before.macs if result.report.before.macs else 1.0
        probes[ratio] = Probe(ratio, passed, macs, "; ".join(
            f"{c.name} {_value(c.value)}{'' if c.status == 'pass' else ' (fails)'}" for c in criteria))
        say(f"probe {len(probes)}: ratio {ratio:g}: {'passes' if passed else 'fails'} ({probes[ratio].criteria})")
        if passed:
            kept.clear()
            kept[ratio] = (result, report)
        return passed

    best = bisect(ratios, passes)
    if best is None:
        first = probes[ratios[0]]
        raise VerificationError(f"no pruning passes {policy_label}: even --ratio {ratios[0]:g} fails it "
                                f"({first.criteria}); nothing written")
    ratio = ratios[best]
    result, report = kept[ratio]
    notes = fidelity_notes(policy, report, len(data.feeds))
    notes.append(f"{len(probes)} probes bisected the ratios {ratios[0]:g}-{ratios[-1]:g} (step {step:g}) on the "
                 "assumption that fidelity falls as the ratio rises")
    if best == len(ratios) - 1:
        notes.append(f"the highest ratio probed, {ratio:g} (--max-ratio), passes: the policy would allow more")
    if policy.data is not None and isinstance(calib, (str, os.PathLike)) and _same_file(calib, policy.data):
        notes.append(f"warning: the policy judges fidelity on the calibration data ({policy.data}) that the "
                     "recovery was fitted to: the result is optimistic; give the policy held-out data")
    thresholds = {k.replace("_", "-"): v for k, v in policy.gates.to_dict().items() if v is not None}
    search = SearchReport(policy_label, data.inputs, thresholds, ratio, list(probes.values()), notes)
    if disk_bytes is not None:
        result.source, result.calib_args = str(model), api.calibration_args(calib)
        result.report.before.size_bytes = disk_bytes
    result.report.search = search.to_dict()
    result.report.notes.append(search.format().splitlines()[0])
    result.search = search
    return result


def _value(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _same_file(a: Union[str, os.PathLike], b: Union[str, os.PathLike]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
