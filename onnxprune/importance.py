"""Channel importance scores, one vector per group.

Which weights count (the same for every criterion): the weight tensors of the convolutions and linear
layers in the group, both the rows that *produce* a channel (Conv/ConvTranspose/Gemm/MatMul output axis)
and the slices that *read* it (the next layers' input axis, through Concat offsets and Flatten blocks).
Biases, BatchNorm/InstanceNorm parameters and per-channel constants do not count. A weight shared by
several nodes counts once.

- "l1": sum of |w| over every counted slice of the channel.
- "l2": square root of the sum of w**2 over the same slices (the group's L2 norm).
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from .deps.context import SCORED_ROLES, Analysis, Group
from .errors import OptionError

CRITERIA = ("l1", "l2")


def channel_scores(analysis: Analysis, groups: list[Group], criterion: str = "l1") -> dict[int, np.ndarray]:
    if criterion not in CRITERIA:
        raise OptionError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    wanted = {id(g.space): g for g in groups}
    per_axis = _axis_sums(analysis, groups, criterion)
    scores = {g.id: np.zeros(g.size, dtype=np.float64) for g in groups}
    seen: set[tuple[int, str, int]] = set()
    for group in groups:
        for place in group.places:
            key = (group.id, place.root, place.axis)
            if place.role not in SCORED_ROLES or key in seen:
                continue
            seen.add(key)
            vector, offset = per_axis[(place.root, place.axis)], 0
            for seg in analysis.spaces.resolve(place.layout):
                if seg.space is group.space and id(seg.space) in wanted:
                    scores[group.id] += vector[offset:offset + seg.length].reshape(seg.space.size, seg.inner).sum(1)
                offset += seg.length
    if criterion == "l2":
        scores = {k: np.sqrt(v) for k, v in scores.items()}
    return scores


def _axis_sums(analysis: Analysis, groups: list[Group], criterion: str) -> dict[tuple[str, int], np.ndarray]:
    """For every scored (weight, axis): the sum of |w| (or w**2) over all other axes. Loads each weight once."""
    axes_of: dict[str, set[int]] = {}
    for group in groups:
        for place in group.places:
            if place.role in SCORED_ROLES:
                axes_of.setdefault(place.root, set()).add(place.axis)
    out = {}
    for root, axes in axes_of.items():
        w = numpy_helper.to_array(analysis.graph.root_proto(root)).astype(np.float64)
        w = np.abs(w) if criterion == "l1" else w * w
        for axis in axes:
            others = tuple(i for i in range(w.ndim) if i != axis)
            out[(root, axis)] = w.sum(axis=others) if others else w
        del w
    return out
