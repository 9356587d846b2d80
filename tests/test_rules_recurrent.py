"""Op rules for LSTM, GRU and RNN (onnxprune/deps/ops/recurrent.py), checked against the masking oracle."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxprune
from onnxprune.cost import count_cost
from onnxprune.errors import NothingToPruneError
from graphs import Builder, assert_blocked_by, attribute, graph_nodes, initializer, out_group
from oracle_check import assert_matches_oracle, run

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
T, FEATURES, HIDDEN, CLASSES = 7, 16, 12, 10


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


def recurrent(b: Builder, x: str, op_type: str, features: int, hidden: int, *, name: str, dirs: int = 1,
              bias: bool = True, initial=None, peepholes: bool = False, outputs: int = 1, **attrs):
    """One recurrent node reading x [T, N, features] (layout 0) with random weights."""
    gates = GATES[op_type]
    inputs = [x, b.weight([dirs, gates * hidden, features], f"{name}.W"),
              b.weight([dirs, gates * hidden, hidden], f"{name}.R"),
              b.weight([dirs, 2 * gates * hidden], f"{name}.B") if bias else ""]
    if initial is not None or peepholes:
        inputs += ["", *(initial or ["", ""][:2 if op_type == "LSTM" else 1])]
    if peepholes:
        inputs.append(b.weight([dirs, 3 * hidden], f"{name}.P"))
    if dirs == 2:
        attrs["direction"] = "bidirectional"
    return b.op(op_type, inputs, name=name, outputs=outputs, hidden_size=hidden, **attrs)


def crnn(op_type: str, dirs: int, **kw) -> Builder:
    """x[N,8,1,T] -> Conv(16) -> Relu -> Squeeze(H) -> Transpose [T,N,16] -> op(12, dirs) -> Y [T,dirs,N,12]
    -> (bidirectional: Transpose -> Reshape [T,N,24]; else Squeeze) -> MatMul(10) -> y"""
    b = Builder(opset=17)
    x = b.input("x", ["N", 8, 1, T])
    f = b.op("Relu", [b.conv(x, 8, FEATURES, 1, name="conv", pads=[0, 0, 0, 0])])
    seq = b.op("Transpose", [b.op("Squeeze", [f, b.ints([2])])], perm=[2, 0, 1])
    y = recurrent(b, seq, op_type, FEATURES, HIDDEN, name="rnn", dirs=dirs, **kw)
    if dirs == 2:
        y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.ints([0, 0, -1])])
    else:
        y = b.op("Squeeze", [y, b.ints([1])])
    b.output(b.matmul(y, dirs * HIDDEN, CLASSES, name="head"))
    return b


@pytest.mark.parametrize("dirs", [1, 2])
@pytest.mark.parametrize("op_type", ["LSTM", "GRU", "RNN"])
def test_conv_features_and_hidden_units_prune(op_type, dirs):
    model = crnn(op_type, dirs).build()
    result = prune(model)
    gates = GATES[op_type]
    conv, units = out_group(result, "conv"), out_group(result, "rnn")
    assert conv.prunable and conv.kept == FEATURES // 2 and conv.members == ["conv", "rnn"]
    assert units.prunable and units.kept == HIDDEN // 2 and units.members == ["rnn", "head"]
    kept = HIDDEN // 2
    assert initializer(result.model, "rnn.W").shape == (dirs, gates * kept, FEATURES // 2)
    assert initializer(result.model, "rnn.R").shape == (dirs, gates * kept, kept)
    assert initializer(result.model, "rnn.B").shape == (dirs, 2 * gates * kept)
    assert initializer(result.model, "head.w").shape == (dirs * kept, CLASSES)
    assert attribute(graph_nodes(result.model, op_type)[0], "hidden_size") == kept
    before, after = count_cost(model, {"x": [3, 8, 1, T]}), count_cost(result.model, {"x": [3, 8, 1, T]})
    assert before.per_node["rnn"].macs == T * 3 * dirs * gates * HIDDEN * (FEATURES + HIDDEN)
    assert after.per_node["rnn"].macs == T * 3 * dirs * gates * kept * (FEATURES // 2 + kept)


def test_lstm_scores_a_unit_by_its_rows_in_every_gate():
    """A unit whose rows are small in all four gates (and in R, and in the head) goes first."""
    model = crnn("LSTM", 1).build()
    weights = {t.name: t for t in model.graph.initializer}
    for name, axis in (("rnn.W", 1), ("rnn.R", 1)):
        w = numpy_helper.to_array(weights[name]).copy()
        for g in range(4):
            index = [slice(None)] * 3
            index[axis] = g * HIDDEN + 3
            w[tuple(index)] *= 1e-3
        weights[name].CopyFrom(numpy_helper.from_array(w, name))
    result = onnxprune.prune(model, ratio=1 / HIDDEN, round_to=1)
    assert out_group(result, "rnn").kept == HIDDEN - 1
    assert 3 not in result.plan.decisions[out_group(result, "rnn").id].kept


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
def test_constant_initial_states_and_peepholes_are_sliced(op_type):
    b = Builder(opset=17)
    x = b.input("x", [T, 2, FEATURES])
    states = [b.weight([2, 2, HIDDEN], f"h0"), b.weight([2, 2, HIDDEN], "c0")][:2 if op_type == "LSTM" else 1]
    y = recurrent(b, x, op_type, FEATURES, HIDDEN, name="rnn", dirs=2, initial=states,
                  peepholes=op_type == "LSTM")
    y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.ints([0, 0, -1])])
    b.output(b.matmul(y, 2 * HIDDEN, CLASSES, name="head"))
    result = prune(b.build())
    kept = HIDDEN // 2
    assert initializer(result.model, "h0").shape == (2, 2, kept)
    if op_type == "LSTM":
        assert initializer(result.model, "c0").shape == (2, 2, kept)
        assert initializer(result.model, "rnn.P").shape == (2, 3 * kept)


def test_stacked_layers():
    """x[T,N,16] -> LSTM(12) -> Y [T,1,N,12] -> Squeeze -> GRU(10) -> Squeeze -> MatMul -> y: both hidden spaces
    prune, the second reads the first through its W."""
    b = Builder(opset=17)
    x = b.input("x", [T, "N", FEATURES])
    y = b.op("Squeeze", [recurrent(b, x, "LSTM", FEATURES, HIDDEN, name="lstm"), b.ints([1])])
    y = b.op("Squeeze", [recurrent(b, y, "GRU", HIDDEN, 10, name="gru"), b.ints([1])])
    b.output(b.matmul(y, 10, CLASSES, name="head"))
    result = prune(b.build())
    assert out_group(result, "lstm").members == ["lstm", "gru"]
    assert out_group(result, "gru").kept == 5
    assert initializer(result.model, "gru.W").shape == (1, 15, HIDDEN // 2)


def test_batch_first_layout_is_declined():
    b = Builder(opset=17)
    x = b.input("x", [2, T, FEATURES])
    y = b.op("Squeeze", [recurrent(b, b.matmul(x, FEATURES, FEATURES, name="proj"), "LSTM", FEATURES, HIDDEN,
                                   name="lstm", layout=1), b.ints([2])])
    b.output(b.matmul(y, HIDDEN, CLASSES, name="head"))
    with pytest.raises(NothingToPruneError, match=r"LSTM 'lstm': its batch-first layout \(layout=1\) is not followed"):
        onnxprune.prune(b.build(infer_outputs=False), ratio=0.5, round_to=1)


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
def test_computed_zero_state_of_the_batch_size_is_omitted(op_type):
    """torch's nn.LSTM without (h0, c0) exports zeros(dirs, batch, H) as ConstantOfShape(Concat([2], batch, [H]))
    (and Expand of a zero constant); ONNX's omitted state is the same zeros, so the input goes and the units prune."""
    b = Builder(opset=17)
    x = b.input("x", [T, "N", FEATURES])
    batch = b.op("Unsqueeze", [b.op("Gather", [b.op("Shape", [x]), b.ints(1)], axis=0), b.ints([0])])
    shape = b.op("Concat", [b.ints([2]), batch, b.ints([HIDDEN])], axis=0)
    h0 = b.op("ConstantOfShape", [shape])
    c0 = b.op("Expand", [b.const(np.zeros((1, 1, 1))), shape])
    y = recurrent(b, x, op_type, FEATURES, HIDDEN, name="rnn", dirs=2, initial=[h0, c0][:2 if op_type == "LSTM" else 1])
    y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.ints([0, 0, -1])])
    b.output(b.matmul(y, 2 * HIDDEN, CLASSES, name="head"))
    result = prune(b.build(), shapes={"x": [T, 3, FEATURES]})
    assert out_group(result, "rnn").kept == HIDDEN // 2
    assert list(graph_nodes(result.model, op_type)[0].input) == ["x", "rnn.W", "rnn.R", "rnn.B"]
    assert not graph_nodes(result.model, "ConstantOfShape")


def test_zero_state_per_direction_concatenated_is_omitted():
    """tf2onnx's bidirectional LSTM: Concat of one Unsqueeze(Expand(0, [batch, H])) per direction."""
    b = Builder(opset=17)
    x = b.input("x", [T, "N", FEATURES])
    batch = b.op("Slice", [b.op("Shape", [x]), b.ints([1]), b.ints([2])])
    one = b.op("Unsqueeze", [b.op("Expand", [b.scalar(0.0), b.op("Concat", [batch, b.ints([HIDDEN])], axis=0)]),
                             b.ints([0])])
    h0 = b.op("Concat", [one, one], axis=0)
    y = recurrent(b, x, "LSTM", FEATURES, HIDDEN, name="lstm", dirs=2, initial=[h0, h0])
    y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.ints([0, 0, -1])])
    b.output(b.matmul(y, 2 * HIDDEN, CLASSES, name="head"))
    result = prune(b.build(), shapes={"x": [T, 3, FEATURES]})
    assert out_group(result, "lstm").kept == HIDDEN // 2
    assert list(graph_nodes(result.model, "LSTM")[0].input) == ["x", "lstm.W", "lstm.R", "lstm.B"]


def test_state_from_a_graph_input_is_named():
    """A streaming model passes its state in from the previous call: the units keep their width, and the report
    names the input."""
    b = Builder(opset=17)
    x = b.matmul(b.input("x", [T, 2, FEATURES]), FEATURES, FEATURES, name="proj")
    state = b.op("Unsqueeze", [b.input("state", [2, HIDDEN]), b.ints([0])])
    y = recurrent(b, x, "GRU", FEATURES, HIDDEN, name="gru", initial=[state])
    b.output(b.matmul(b.op("Squeeze", [y, b.ints([1])]), HIDDEN, CLASSES, name="head"))
    result = prune(b.build())
    assert_blocked_by(out_group(result, "gru"), "GRU", "initial hidden state is read from graph input 'state'")
    assert out_group(result, "proj").kept == FEATURES // 2


def test_hidden_state_output_and_computed_initial_state_block_the_units():
    b = Builder(opset=17)
    x = b.matmul(b.input("x", [T, 2, FEATURES]), FEATURES, FEATURES, name="proj")
    h0 = b.op("Tanh", [b.input("h0", [1, 2, HIDDEN])])
    y, y_h = recurrent(b, x, "GRU", FEATURES, HIDDEN, name="gru", initial=[h0], outputs=2)
    b.output(b.matmul(b.op("Squeeze", [y, b.ints([1])]), HIDDEN, CLASSES, name="head"))
    b.output(y_h)
    result = onnxprune.prune(b.build(), ratio=0.5, round_to=1)
    group = out_group(result, "gru")
    assert_blocked_by(group, "GRU", "initial hidden state is not a constant (computed by Tanh")
    assert_blocked_by(group, "graph output 'gru.1' keeps its shape")


def test_input_read_on_another_axis_is_blocked():
    """x[T,N,16] -> Gemm-like MatMul over T is not possible; a Transpose putting features first is declined."""
    b = Builder(opset=17)
    x = b.input("x", [2, FEATURES, T])
    f = b.op("Relu", [b.conv(x, FEATURES, FEATURES, 1, dims=1, name="conv", pads=[0, 0])])
    y = recurrent(b, b.op("Transpose", [f], perm=[1, 0, 2]), "RNN", T, HIDDEN, name="rnn")
    b.output(b.matmul(b.op("Squeeze", [y, b.ints([1])]), HIDDEN, CLASSES, name="head"))
    result = prune(b.build())
    assert_blocked_by(out_group(result, "conv"), "RNN", "feature axis")
    assert out_group(result, "rnn").prunable


def test_flatten_of_both_directions():
    """Y [T,2,N,H] -> Transpose [T,N,2,H] -> Flatten(axis=2) [T*N, 2H] -> Gemm: the directions repeat the units."""
    b = Builder(opset=17)
    x = b.input("x", [T, 3, FEATURES])
    y = recurrent(b, x, "LSTM", FEATURES, HIDDEN, name="lstm", dirs=2)
    y = b.op("Flatten", [b.op("Transpose", [y], perm=[0, 2, 1, 3])], axis=2)
    b.output(b.gemm(y, 2 * HIDDEN, CLASSES, name="head"))
    result = prune(b.build())
    assert out_group(result, "lstm").kept == HIDDEN // 2
    assert initializer(result.model, "head.w").shape == (HIDDEN, CLASSES)


def _merged_by_shape(factor_axis: int):
    """Y [T,2,N,H] -> Transpose [T,N,2,H] -> Reshape(Concat(shape[0:1], shape[1:2], shape[a] * shape[3])), as the
    dynamo exporter merges the directions: with a = 2 (the directions, 2 for every input) the count is followed;
    with a = 1 (the batch, pinned or not) it is not."""
    b = Builder(opset=17)
    x = b.input("x", [T, "N", FEATURES])
    y = b.op("Transpose", [recurrent(b, x, "LSTM", FEATURES, HIDDEN, name="lstm", dirs=2)], perm=[0, 2, 1, 3])
    shape = b.op("Shape", [y])
    piece = lambda i: b.op("Slice", [shape, b.ints([i]), b.ints([i + 1])])  # noqa: E731
    if factor_axis == 2:
        target = b.op("Concat", [piece(0), piece(1), b.op("Mul", [piece(2), piece(3)])], axis=0)
    else:
        target = b.op("Concat", [piece(0), b.op("Mul", [piece(1), piece(3)]), piece(2)], axis=0)
    y = b.op("Reshape", [y, target])
    b.output(b.matmul(y, 2 * HIDDEN if factor_axis == 2 else 2, CLASSES, name="head"))
    return b.build()


def test_directions_merged_by_a_count_read_at_run_time():
    result = prune(_merged_by_shape(2), shapes={"x": [T, 3, FEATURES]})
    assert out_group(result, "lstm").kept == HIDDEN // 2
    assert initializer(result.model, "head.w").shape == (HIDDEN, CLASSES)


@pytest.mark.parametrize("shapes", [None, {"x": [T, 2, FEATURES]}])
def test_a_count_times_the_batch_is_not_followed_even_where_the_batch_is_pinned(shapes):
    with pytest.raises(NothingToPruneError, match="Mul '.*': computes with a shape that holds a channel count"):
        onnxprune.prune(_merged_by_shape(1), ratio=0.5, round_to=1, shapes=shapes)


@pytest.mark.parametrize("op_type,bias", [("LSTM", True), ("GRU", False)])
def test_recovery_refits_the_input_part_of_the_gates(op_type, bias):
    """The dense model on the calibration data is the reference: least squares refits the recurrent layer's W x + Wb
    (both directions, the kept units' gate rows) on the pruned convolution's output, which lowers its error, and the
    recovered CRNN is closer to the dense model than the plain one. Without a bias B, one is added (R's half 0)."""
    model = crnn(op_type, 2, bias=bias).build()
    calib = np.random.default_rng(0).standard_normal((32, 8, 1, T)).astype(np.float32)
    feeds = [{"x": calib[i:i + 8]} for i in range(0, 32, 8)]
    plain = onnxprune.prune(model, ratio=0.5, round_to=1)
    recovered = onnxprune.prune(model, ratio=0.5, round_to=1, calib=feeds)
    layer = next(r for r in recovered.recovery.layers if r.node == "rnn")
    assert layer.step == "lsq" and layer.error_after < layer.error_before
    onnx.checker.check_model(recovered.model, full_check=True)
    gates, kept = GATES[op_type], HIDDEN // 2
    assert initializer(recovered.model, "rnn.W").shape == (2, gates * kept, FEATURES // 2)
    b = next(numpy_helper.to_array(t) for t in recovered.model.graph.initializer
             if t.name == graph_nodes(recovered.model, op_type)[0].input[3])
    assert b.shape == (2, 2 * gates * kept) and (bias or not np.any(b[:, gates * kept:]))
    x = {"x": calib[:8]}
    dense = run(model, x)[0]
    error = lambda m: float(np.abs(run(m, x)[0] - dense).mean())  # noqa: E731
    assert error(recovered.model) < error(plain.model)


def test_statistics_matching_alone_names_the_recurrent_layers_it_leaves():
    model = crnn("LSTM", 2).build()
    calib = np.random.default_rng(0).standard_normal((16, 8, 1, T)).astype(np.float32)
    result = onnxprune.prune(model, ratio=0.5, round_to=1, calib=[{"x": calib}], recover="stats")
    assert dict(result.recovery.skipped)["rnn"] == "LSTM layers are refit by least squares only"
