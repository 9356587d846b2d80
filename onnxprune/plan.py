"""Which channels each group keeps.

- scope "uniform": every prunable group removes `ratio` of its channels.
- `heads_ratio` / `ffn_ratio` (when set) replace `ratio` for attention-head groups and for the neurons of
  linear layers (MatMul/Gemm outputs: FFN intermediates); those groups are then pruned uniformly whatever
  the scope. See `kind_of`.
- scope "global": scores are divided by their group's mean so groups compare, the lowest channels across
  all groups are removed until `ratio` of all prunable channels are gone, and no group loses more than
  `max_ratio` of its channels.
Kept counts are then rounded *up* so that the channels a tensor keeps are a multiple of `round_to`
(onnxruntime's blocked CPU convolutions work on 8 or 16 channels at a time; see docs/benchmarks.md), and
never fall below `min_channels`. Within a group the highest-scoring channels are kept, in their order.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .deps.context import Group
from .deps.ops.recurrent import GATES as RECURRENT_GATES
from .errors import OptionError

SCOPES = ("uniform", "global")


@dataclass
class PlanOptions:
    """How a plan chooses channels. These defaults are the prune options' defaults everywhere: api.prune, the
    command line, recipes, the latency target and sensitivity refer to them (PlanOptions.ratio ...)."""

    ratio: float = 0.5
    scope: str = "uniform"
    max_ratio: float = 0.9
    round_to: int = 16
    min_channels: int = 1
    exclude: tuple[str, ...] = ()
    heads_ratio: Optional[float] = None
    ffn_ratio: Optional[float] = None

    def validate(self) -> None:
        for option, value in (("ratio", self.ratio), ("heads_ratio", self.heads_ratio), ("ffn_ratio", self.ffn_ratio)):
            if value is not None and not 0.0 <= value < 1.0:
                raise OptionError(f"{option} must be in [0, 1), got {value}", params=(option,))
        if not 0.0 < self.max_ratio < 1.0:
            raise OptionError(f"max_ratio must be in (0, 1), got {self.max_ratio}", params=("max_ratio",))
        if self.scope not in SCOPES:
            raise OptionError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}", params=("scope",))
        if self.round_to < 1:
            raise OptionError(f"round_to must be at least 1, got {self.round_to}", params=("round_to",))
        if self.min_channels < 1:
            raise OptionError(f"min_channels must be at least 1, got {self.min_channels}", params=("min_channels",))


@dataclass
class GroupDecision:
    group: int
    size: int
    kept: np.ndarray
    note: str = ""

    @property
    def removed(self) -> int:
        return self.size - len(self.kept)


@dataclass
class Plan:
    options: PlanOptions
    decisions: dict[int, GroupDecision] = field(default_factory=dict)

    @property
    def pruned(self) -> list[GroupDecision]:
        return [d for d in self.decisions.values() if d.removed > 0]


def exclude_patterns(exclude) -> tuple[str, ...]:
    """--exclude / `exclude=` as a tuple of globs: None is none, a single string is one pattern."""
    if exclude is None:
        return ()
    if isinstance(exclude, str):
        exclude = (exclude,)
    globs = tuple(exclude)
    for glob in globs:
        if not isinstance(glob, str):
            raise OptionError(f"exclude patterns must be strings, got {glob!r}")
    return globs


def unmatched_excludes(patterns, names: list[str], what: str = "node of a prunable group") -> list[str]:
    """A warning for each pattern that matches none of `names` (it excludes nothing), with the names it might
    have meant: exports name nodes by module path ('/head/head.2/Gemm'), not by module ('head.2')."""
    warnings = []
    for pattern in patterns:
        if any(fnmatch.fnmatchcase(n, pattern) for n in names):
            continue
        wider = f"*{pattern.strip('*')}*"
        near = [n for n in names if fnmatch.fnmatchcase(n, wider)]
        hint = (f"; '{wider}' would match {near[0]!r}" + (f" and {len(near) - 1} more" if len(near) > 1 else "")
                if near else f"; names look like {', '.join(repr(n) for n in names[:2])}" if names else "")
        warnings.append(f"exclude {pattern!r} matches no {what}, so it excludes nothing{hint} "
                        "(onnxprune inspect lists them)")
    return warnings


def excluded(members: Sequence[str], patterns) -> str:
    """The first of `patterns` (--exclude globs) that matches one of the node names `members`, or ""."""
    for pattern in patterns:
        for member in members:
            if fnmatch.fnmatchcase(member, pattern):
                return pattern
    return ""


def kind_of(group: Group, spaces, op_types: dict[str, str]) -> str:
    """"heads" (each index owns several features of a MatMul/Gemm output: attention heads), "neurons" (single
    MatMul/Gemm output features: FFN intermediates, classifier hidden units), "units" (the hidden units of an
    LSTM, GRU or RNN) or "channels" (everything else)."""
    if any(p.role == "out" and op_types.get(p.node) in RECURRENT_GATES for p in group.places):
        return "units"
    linear = any(p.role == "out" and op_types.get(p.node) in ("MatMul", "Gemm") for p in group.places)
    if not linear:
        return "channels"
    return "heads" if unit_of(group, spaces) > 1 else "neurons"


def unit_of(group: Group, spaces) -> int:
    """Channels of a tensor per group index (1 for plain channels, head_dim for heads, ...)."""
    inners = [
        seg.inner for p in group.places if p.role == "out" for seg in spaces.resolve(p.layout) if seg.space is group.space
    ]
    return min(inners) if inners else 1


def make_plan(groups: list[Group], scores: dict[int, np.ndarray], options: PlanOptions, spaces,
              op_types: Optional[dict[str, str]] = None) -> Plan:
    """`op_types` (node name -> op type) is needed only for heads_ratio / ffn_ratio."""
    options.validate()
    plan = Plan(options)
    candidates = []
    own = {"heads": options.heads_ratio, "neurons": options.ffn_ratio}
    for group in groups:
        if not group.prunable:
            continue
        pattern = excluded(group.members, options.exclude)
        if pattern:
            plan.decisions[group.id] = GroupDecision(group.id, group.size, np.arange(group.size), f"excluded by {pattern}")
            continue
        candidates.append(group)
    specific = {}  # group id -> its kind's own ratio
    if any(r is not None for r in own.values()):
        if op_types is None:
            raise ValueError("make_plan needs op_types for heads_ratio / ffn_ratio")
        for g in candidates:
            ratio = own.get(kind_of(g, spaces, op_types))
            if ratio is not None:
                specific[g.id] = ratio
    removals = {
        g.id: g.size - math.ceil(g.size * (1.0 - specific.get(g.id, options.ratio)) - 1e-9) for g in candidates
    }
    if options.scope == "global":
        removals.update(_global_removals([g for g in candidates if g.id not in specific], scores, options))
    for group in candidates:
        n_keep, note = _rounded(group.size - removals[group.id], group, options, unit_of(group, spaces))
        plan.decisions[group.id] = _keep_best(group, scores[group.id], n_keep, note if n_keep < group.size else "")
    return plan


def _keep_best(group: Group, scores: np.ndarray, n_keep: int, note: str = "") -> GroupDecision:
    order = np.argsort(-scores, kind="stable")
    return GroupDecision(group.id, group.size, np.sort(order[:n_keep]), note)


def aligned_widths(group: Group, spaces, round_to: int, min_channels: int = 1, max_ratio: float = 1.0) -> list[int]:
    """The kept counts a group may take, ascending: multiples of the channel block (as `_rounded` makes them),
    at least `min_channels` and (1 - max_ratio) of the group, and the full size."""
    step, _ = channel_step(group.size, unit_of(group, spaces), round_to)
    floor = max(min_channels, math.ceil(group.size * (1.0 - max_ratio) - 1e-9), 1)
    widths = [w for w in range(step, group.size, step) if w >= floor]
    return widths + [group.size]


def plan_widths(groups: list[Group], scores: dict[int, np.ndarray], widths: dict[int, int],
                options: Optional[PlanOptions] = None, notes: Optional[dict[int, str]] = None) -> Plan:
    """A plan that keeps `widths[group id]` channels of each listed group (the highest-scoring ones, in their
    order); the other prunable groups keep all their channels, and the plan says so (as make_plan does), so that
    a plan file of it names every group. The widths are chosen elsewhere (allocate.py) from `aligned_widths`;
    they are checked here."""
    plan = Plan(options or PlanOptions())
    by_id = {g.id: g for g in groups}
    for gid, n_keep in widths.items():
        group = by_id.get(gid)
        if group is None or not group.prunable:
            raise ValueError(f"group {gid} is not a prunable group of this model")
        if not 1 <= n_keep <= group.size:
            raise ValueError(f"group {gid}: cannot keep {n_keep} of {group.size} channels")
        plan.decisions[gid] = _keep_best(group, scores[gid], int(n_keep), (notes or {}).get(gid, ""))
    for group in groups:
        if group.prunable and group.id not in plan.decisions:
            plan.decisions[group.id] = GroupDecision(group.id, group.size, np.arange(group.size),
                                                     (notes or {}).get(group.id, ""))
    return plan


def channel_step(size: int, unit: int, round_to: int) -> tuple[int, str]:
    """The step of a group's kept count, so that its tensors' widths (count x `unit`: head_dim for heads) are
    multiples of `round_to`; and a note when, for heads, no width below `size` could be and the dense width is
    not one either: then the step is 1 head (8 heads x 15 features at --round-to 16 would otherwise never be
    pruned). Plain channels (unit 1) keep the rule: a group smaller than the step stays whole."""
    step = round_to // math.gcd(round_to, unit)
    if unit > 1 and step >= size and (size * unit) % round_to:
        return 1, (f"{size} x {unit} features: no narrower width is a multiple of --round-to {round_to}, so this "
                   "group is pruned unaligned, in steps of 1")
    return step, ""


def _rounded(n_keep: int, group: Group, options: PlanOptions, unit: int) -> tuple[int, str]:
    step, note = channel_step(group.size, unit, options.round_to)
    n_keep = -(-n_keep // step) * step
    return min(group.size, max(n_keep, options.min_channels)), note


def _global_removals(groups: list[Group], scores: dict[int, np.ndarray], options: PlanOptions) -> dict[int, int]:
    pool = []
    for group in groups:
        s = scores[group.id]
        mean = float(np.mean(s)) if s.size else 0.0
        normalized = s / mean if mean > 0 else np.zeros_like(s)
        pool.extend((float(v), group.id) for v in normalized)
    pool.sort(key=lambda item: item[0])
    budget = int(round(options.ratio * sum(g.size for g in groups)))
    cap = {g.id: min(int(g.size * options.max_ratio), g.size - options.min_channels) for g in groups}
    removed = {g.id: 0 for g in groups}
    for _, gid in pool:
        if budget <= 0:
            break
        if removed[gid] < cap[gid]:
            removed[gid] += 1
            budget -= 1
    return removed
