"""Channel importance scores, one vector per group.

Which weights count (the same for every criterion): the weight tensors of the convolutions and linear
layers in the group, both the rows that *produce* a channel (Conv/ConvTranspose/Gemm/MatMul output axis)
and the slices that *read* it (the next layers' input axis, through Concat offsets and Flatten blocks).
Biases, BatchNorm/InstanceNorm parameters and per-channel constants do not count. A weight shared by
several nodes counts once.

- "l1": sum of |w| over every counted slice of the channel.
- "l2": square root of the sum of w**2 over the same slices (the group's L2 norm).

Data-aware criteria need calibration data (`activation_inputs` + `collect_input_stats`):
- "activation": mean |x| of the channel where the next layers read it (their input activations), summed
  over those readers; the weights do not count.
- "wanda": sum of |w| * ||x_j|| over the same slices as "l1", where x_j is the input channel that weight
  element multiplies and ||x_j|| its L2 norm over the calibration data (Wanda's score).
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from typing import Optional

from .deps.context import SCORED_ROLES, Analysis, Group
from .errors import OptionError
from .graph import attr

CRITERIA = ("l1", "l2", "activation", "wanda")
DEFAULT_CRITERION = "l1"  # the channel score unless told otherwise (api.prune, the command line, recipes)
DATA_CRITERIA = ("activation", "wanda")


def activation_inputs(analysis: Analysis, groups: list[Group]) -> dict[str, tuple[str, int]]:
    """node -> (its activation input, that input's channel axis) for every node that holds a scored place."""
    graph = analysis.graph
    out = {}
    for group in groups:
        for place in group.places:
            if place.role not in SCORED_ROLES or place.node in out:
                continue
            node = graph.node_by_name(place.node)
            if node.op_type in ("Conv", "ConvTranspose"):
                out[place.node] = (node.input[0], 1)
            elif node.op_type == "Gemm":
                out[place.node] = (node.input[0], 0 if attr(node, "transA", 0) else 1)
            elif node.op_type == "MatMul" and graph.constant_root(node.input[0]) is None:
                out[place.node] = (node.input[0], -1)
    return out


def channel_scores(
    analysis: Analysis, groups: list[Group], criterion: str = "l1", stats: Optional[dict] = None
) -> dict[int, np.ndarray]:
    """One score per channel of each group. `stats`: node -> ChannelStats of its activation input
    (activations.channel_stats over activation_inputs), needed by the data-aware criteria."""
    if criterion not in CRITERIA:
        raise OptionError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    if criterion in DATA_CRITERIA and stats is None:
        raise OptionError(f"criterion {criterion!r} scores channels on data: give calibration data")
    wanted = {id(g.space): g for g in groups}
    per_axis = _axis_sums(analysis, groups, criterion, stats or {})
    scores = {g.id: np.zeros(g.size, dtype=np.float64) for g in groups}
    seen: set[tuple[int, str, int]] = set()
    for group in groups:
        for place in group.places:
            key = (group.id, place.root, place.axis)
            if place.role not in SCORED_ROLES or key in seen or (place.root, place.axis) not in per_axis:
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


def _axis_sums(analysis: Analysis, groups: list[Group], criterion: str, stats: dict) -> dict[tuple[str, int], np.ndarray]:
    """For every scored (weight, axis): the criterion's sum over all other axes. Loads each weight once."""
    axes_of: dict[str, dict[int, str]] = {}
    for group in groups:
        for place in group.places:
            if place.role in SCORED_ROLES and (criterion != "activation" or place.role == "in"):
                axes_of.setdefault(place.root, {}).setdefault(place.axis, place.node)
    out = {}
    for root, axes in axes_of.items():
        w = numpy_helper.to_array(analysis.graph.root_proto(root)).astype(np.float64)
        w = w * w if criterion == "l2" else np.abs(w)
        for axis, node_name in axes.items():
            node = analysis.graph.node_by_name(node_name)
            if criterion == "activation":
                if node_name in stats:
                    out[(root, axis)] = stats[node_name].mean_abs
                continue
            weighted = w
            if criterion == "wanda" and node_name in stats:
                weighted = w * _input_norms(node, w.shape, stats[node_name].norm)
            others = tuple(i for i in range(w.ndim) if i != axis)
            out[(root, axis)] = weighted.sum(axis=others) if others else weighted
        del w
    return out


def _input_norms(node, shape: tuple, norms: np.ndarray) -> np.ndarray:
    """||x_j|| of the input channel each weight element multiplies, broadcastable to the weight's shape."""
    if node.op_type == "Conv":
        group = int(attr(node, "group", 1))
        out_per_group, in_per_group = shape[0] // group, shape[1]
        index = (np.arange(shape[0])[:, None] // out_per_group) * in_per_group + np.arange(in_per_group)[None, :]
        return norms[index].reshape(shape[:2] + (1,) * (len(shape) - 2))
    if node.op_type == "ConvTranspose" or (node.op_type in ("Gemm", "MatMul") and not attr(node, "transB", 0)):
        return norms.reshape((-1,) + (1,) * (len(shape) - 1))  # the weight's axis 0 reads the input
    return norms.reshape(1, -1)  # Gemm with transB: [N, K]
