"""LSTM, GRU and RNN with constant weights: W's input axis reads the input's features, and the hidden units are
a new space.

ONNX packs the gates of every direction in one tensor: W [dirs, gates*H, in], R [dirs, gates*H, H],
B [dirs, 2*gates*H] (W's biases, then R's), P (LSTM peepholes) [dirs, 3*H], initial_h and initial_c
[dirs, batch, H]; Y [seq, dirs, batch, H], Y_h and Y_c [dirs, batch, H]. The batch-first layout (layout=1),
which onnxruntime cannot run, is declined. Unit j's row in gate g is g*H + j, so the units' rows in W and R are
a layout of `gates` segments of the hidden space, and their biases one of 2*gates segments. Both directions
share the index: a unit kept is kept in both.

Unit j reaches the rest of the graph through Y, Y_h and Y_c, and reaches the other units only through R's
column j (the recurrence reads the previous h through R's input axis). R's columns are therefore a place
that *reads* the space: zeroing them and the next layers' reads of unit j (the masking oracle) gives
exactly the outputs of the model without unit j, whatever the activations and initial states. The rewriter
sets hidden_size to the units kept. A computed initial state of zeros (exporters build one of the input's
batch size) is omitted, which ONNX defines as the same zeros; any other computed state keeps the units whole,
as does a state read from a graph input (streaming models pass the state from call to call).
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from ...graph import attr
from ..rules import OpRule

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
BIAS, INITIAL_H, INITIAL_C, PEEPHOLES = 3, 5, 6, 7


def _recurrent(node, ctx) -> None:
    gates = GATES[node.op_type]
    w, r = node.input[1], node.input[2]
    for index, name, what in ((1, w, "weight W"), (2, r, "recurrence weight R")):
        shape = ctx.graph.const_shape(name)
        if shape is None or len(shape) != 3:
            reason = ctx.not_constant_reason(name, what) if shape is None else f"its {what} is not 3-D"
            ctx.block_tracked_inputs(node, reason)
            return
    if int(attr(node, "layout", 0)) != 0:
        ctx.block_tracked_inputs(node, "its batch-first layout (layout=1) is not followed (onnxruntime cannot run it)")
        return
    hidden = ctx.graph.const_shape(r)[2]
    if int(attr(node, "hidden_size", hidden)) != hidden:
        ctx.block_tracked_inputs(node, f"its hidden_size is not R's width {hidden}")
        return
    x_track = ctx.track(node.input[0])
    if x_track is not None:
        if x_track.axis == 2:
            ctx.param(node, 1, 2, x_track.layout, "in")
        else:
            ctx.block_input(node, 0, "its input's channels are not on the feature axis (axis 2)")
    units = ctx.new_layout(hidden, node)
    ctx.param(node, 1, 1, units * gates, "out")
    ctx.param(node, 2, 1, units * gates, "out")
    ctx.param(node, 2, 2, units, "in")
    optional = {BIAS: (units * (2 * gates), 1, "bias", "bias B"),
                INITIAL_H: (units, 2, "param", "initial hidden state"),
                INITIAL_C: (units, 2, "param", "initial cell state"),
                PEEPHOLES: (units * 3, 1, "param", "peephole weights P")}
    for index, (layout, axis, role, what) in optional.items():
        name = node.input[index] if index < len(node.input) else ""
        if not name or (index in (INITIAL_C, PEEPHOLES) and node.op_type != "LSTM"):
            continue
        if ctx.track(name) is not None:
            ctx.block_input(node, index, f"its {what} carries channels of another layer")
        if ctx.param(node, index, axis, layout, role) or ctx.is_constant(name):
            continue
        if index in (INITIAL_H, INITIAL_C) and _zeros(ctx, name):  # the default state: the input can go
            ctx.on_rewrite(node, lambda rw, index=index: _omit_input(rw.node(node), index))
        else:
            ctx.block(units, node, _state_reason(ctx, name, what))
    for index, axis in ((0, 3), (1, 2), (2, 2)):  # Y, Y_h, Y_c
        if index < len(node.output):
            ctx.set_track(node.output[index], axis, units)
    ctx.on_rewrite(node, lambda rw: rw.set_attr(node, "hidden_size", rw.new_length(units)))


_MOVERS = ("Expand", "Tile", "Reshape", "Unsqueeze", "Squeeze", "Slice", "Gather", "Transpose", "Cast", "Identity")


def _zeros(ctx, name: str, depth: int = 0) -> bool:
    """Whether `name` is zeros for every input: ConstantOfShape of 0 (its default value), zeros that ops which only
    move or select values pass on, or a Concat of such zeros (exporters build a zero state of the input's batch
    size so; torch slices one state of all layers for each layer, tf2onnx concatenates one per direction)."""
    value = ctx.graph.value(name)
    if value is not None:
        return not np.any(value)
    producer = ctx.graph.producer.get(name)
    if producer is None or depth > 16:
        return False
    if producer.op_type in _MOVERS:
        return _zeros(ctx, producer.input[0], depth + 1)
    if producer.op_type == "Concat":
        return all(_zeros(ctx, i, depth + 1) for i in producer.input if i)
    if producer.op_type != "ConstantOfShape":
        return False
    value = attr(producer, "value", None)
    return value is None or not np.any(numpy_helper.to_array(value))


def _state_reason(ctx, name: str, what: str) -> str:
    """Why a computed state keeps the units whole; the graph input it is read from where it comes from one (a state
    the caller passes in from the previous call: its width is part of the model's interface)."""
    origin, depth = name, 0
    while origin not in ctx.graph.input_names and depth < 16:
        producer = ctx.graph.producer.get(origin)
        if producer is None or producer.op_type not in _MOVERS + ("Concat",):
            return ctx.not_constant_reason(name, what) + ": its width cannot follow the units"
        origin, depth = producer.input[0], depth + 1
    return f"its {what} is read from graph input '{origin}', whose shape the model keeps"


def _omit_input(node, index: int) -> None:
    """ONNX takes an omitted initial state as zeros."""
    node.input[index] = ""
    while node.input and not node.input[-1]:
        del node.input[-1]


RULES = [OpRule(tuple(GATES), _recurrent)]
