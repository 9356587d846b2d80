"""Per-group widths for a latency goal: the least importance lost per millisecond saved.

Plain data in, plain data out. Each candidate group lists its allowed widths (plan.aligned_widths, ascending,
the full size last), the importance lost at each width (0 at full size) and the milliseconds saved at each width
(latency.GroupLatency.saved; 0 at full size). Starting from the dense model, `greedy_path` repeatedly narrows
the group whose next step loses the least importance per millisecond saved (looking a few widths ahead, so a
flat stretch of the latency ladder does not hide a saving just beyond it) until no step saves anything more, and
lists every plan it passes through, one width at a time. `first_reaching` finds the first plan predicted to
meet a goal; the latency loop (latency_target.py) then walks the path by measurement. The widths are turned
into kept channels by plan.plan_widths.

`importance_lost` gives the loss table from channel scores: each group's scores divided by their mean (so that
groups compare, as plan.py's global scope does), and the loss at width w is the sum of the size - w lowest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

LOOKAHEAD = 8  # narrower widths considered from a group's current one


@dataclass
class Candidate:
    group: int
    widths: list[int]  # ascending; the last is the full group
    loss: list[float]  # importance lost at each width (0 at the full width)
    saved_ms: list[float]  # predicted milliseconds saved at each width (0 at the full width)


@dataclass
class Allocation:
    widths: dict[int, int]  # group id -> channels kept (only the narrowed groups)
    predicted_ms: float
    loss: float  # importance lost in all


def importance_lost(scores: np.ndarray, widths: Sequence[int]) -> list[float]:
    """Loss at each width: the sum of the (size - width) lowest scores, the scores divided by their mean."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    mean = float(s.mean()) if s.size else 0.0
    s = s / mean if mean > 0 else np.ones_like(s)
    prefix = np.concatenate([[0.0], np.cumsum(s)])
    return [float(prefix[len(s) - w]) for w in widths]


def greedy_path(candidates: Sequence[Candidate], dense_ms: float) -> list[Allocation]:
    """Every plan the greedy narrowing passes through, from the dense model (index 0) until no step saves
    anything more. Each choice narrows the group whose next step loses the least importance per millisecond
    saved; a choice that skips widths (looking past a flat stretch of the ladder) still passes through them, so
    consecutive plans differ by one width of one group and the predicted latency never rises along the path."""
    at = {c.group: len(c.widths) - 1 for c in candidates}
    def snapshot() -> Allocation:
        widths = {c.group: c.widths[at[c.group]] for c in candidates if at[c.group] < len(c.widths) - 1}
        saved = sum(c.saved_ms[at[c.group]] for c in candidates)
        lost = sum(c.loss[at[c.group]] for c in candidates)
        return Allocation(widths, dense_ms - saved, lost)

    path = [snapshot()]
    while True:
        best = None  # (loss per ms, -ms, group, index)
        for c in candidates:
            i = at[c.group]
            for j in range(i - 1, max(i - 1 - LOOKAHEAD, -1), -1):
                d_ms = c.saved_ms[j] - c.saved_ms[i]
                if d_ms <= 1e-12:
                    continue
                d_loss = max(c.loss[j] - c.loss[i], 0.0)
                key = (d_loss / d_ms, -d_ms, c.group, j)
                if best is None or key < best:
                    best = key
        if best is None:
            return path
        _, _, g, j = best
        for k in range(at[g] - 1, j - 1, -1):  # one width at a time
            at[g] = k
            path.append(snapshot())


def first_reaching(predicted: Sequence[float], goal_ms: float) -> int:
    """The index of the first plan on a path (`predicted`: its plans' predicted ms) at or under `goal_ms`; the
    last plan when none is."""
    return next((k for k, ms in enumerate(predicted) if ms <= goal_ms + 1e-9), len(predicted) - 1)

