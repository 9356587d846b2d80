"""Unstructured magnitude pruning: exact counts, N:M patterns, weight discovery, safety of the copy."""

from __future__ import annotations

import json
import math
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxprune import unstructured
from onnxprune.errors import OnnxPruneError, OptionError
from onnxprune.unstructured import UnstructuredReport, parse_pattern, prune_unstructured

OPSET = 17


# ------------------------------------------------------------------------------------------ builders


def _model(nodes, inputs, outputs, initializers=(), opset=OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _init(name, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def mixed_model(dtype=np.float32, seed=0) -> onnx.ModelProto:
    """x[1,4,8,8] -> Conv(+bias) -> BN -> Relu -> grouped Conv -> GAP -> Flatten -> Gemm(transB=1, +C)
    -> MatMul -> Add(bias) -> Gemm(transB=0) -> y[1,12]."""
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [
        _init("conv1.w", _rand(rng, 8, 4, 3, 3, dtype=dtype)),
        _init("conv1.b", _rand(rng, 8, dtype=dtype)),
        _init("bn.scale", _rand(rng, 8, dtype=dtype)),
        _init("bn.bias", _rand(rng, 8, dtype=dtype)),
        _init("bn.mean", _rand(rng, 8, dtype=dtype)),
        _init("bn.var", (np.abs(_rand(rng, 8)) + 1).astype(dtype)),
        _init("conv2.w", _rand(rng, 8, 2, 3, 3, dtype=dtype)),  # group=4
        _init("fc1.w", _rand(rng, 10, 8, dtype=dtype)),  # transB=1: [N, K]
        _init("fc1.b", _rand(rng, 10, dtype=dtype)),
        _init("mm.w", _rand(rng, 10, 6, dtype=dtype)),  # [K, N]
        _init("mm.b", _rand(rng, 6, dtype=dtype)),
        _init("fc2.w", _rand(rng, 6, 12, dtype=dtype)),  # transB=0: [K, N]
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b1"], name="bn"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "conv2.w"], ["c2"], name="conv2", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["g1"], name="fc1", transB=1),
        helper.make_node("MatMul", ["g1", "mm.w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "mm.b"], ["a"], name="mm_bias"),
        helper.make_node("Gemm", ["a", "fc2.w"], ["y"], name="fc2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", elem, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", elem, [1, 12])],
        inits,
    )


WEIGHTS = ("conv1.w", "conv2.w", "fc1.w", "mm.w", "fc2.w")


def _weights(model) -> dict[str, np.ndarray]:
    found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _run(model, feeds) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _feeds(model, seed=1):
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in model.graph.input:
        ttype = inp.type.tensor_type
        shape = [d.dim_value for d in ttype.shape.dim]
        feeds[inp.name] = rng.standard_normal(shape).astype(helper.tensor_dtype_to_np_dtype(ttype.elem_type))
    return feeds


def _k(sparsity, n):
    return math.floor(sparsity * n + 0.5)


def _valid(model):
    onnx.checker.check_model(model, full_check=True)


# ------------------------------------------------------------------------------------- layer scope


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9, 0.999])
def test_layer_scope_zeroes_exactly_the_smallest(sparsity):
    model = mixed_model()
    pruned, report = prune_unstructured(model, sparsity)
    before, after = _weights(model), _weights(pruned)
    assert [layer.weight for layer in report.layers] == list(WEIGHTS)
    for layer in report.layers:
        w0, w1 = before[layer.weight], after[layer.weight]
        assert w1.shape == w0.shape and w1.dtype == w0.dtype
        assert layer.zeros_after == np.count_nonzero(w1 == 0) == _k(sparsity, w0.size)
        assert layer.sparsity == pytest.approx(_k(sparsity, w0.size) / w0.size)
        kept = w1 != 0
        np.testing.assert_array_equal(w1[kept], w0[kept])  # survivors unchanged
        if 0 < layer.zeros_after < w0.size:
            assert np.abs(w0[~kept]).max() <= np.abs(w0[kept]).min()


def test_layer_scope_ties_still_give_the_exact_count():
    rng = np.random.default_rng(0)
    w = np.where(rng.random((6, 7)) < 0.5, -1.0, 1.0).astype(np.float32)  # all |w| equal
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])],
        [_init("w", w)],
    )
    pruned, report = prune_unstructured(model, 0.3)
    assert np.count_nonzero(_weights(pruned)["w"] == 0) == _k(0.3, 42) == report.layers[0].zeros_after


def test_existing_zeros_count_towards_the_target_and_are_not_rewritten():
    rng = np.random.default_rng(0)
    w = _rand(rng, 10, 10)
    w[:6] = 0.0  # already 60% sparse
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [_init("w", w)],
    )
    pruned, report = prune_unstructured(model, 0.5)
    layer = report.layers[0]
    assert (layer.zeros_before, layer.zeros_after) == (60, 60)
    assert pruned.SerializeToString() == model.SerializeToString()
    _, report = prune_unstructured(model, 0.75)
    assert report.layers[0].zeros_after == 75


# ------------------------------------------------------------------------------------ global scope


def _scaled_model():
    model = mixed_model()
    for tensor, scale in zip([t for t in model.graph.initializer if t.name in WEIGHTS], (0.1, 1.0, 3.0, 0.5, 10.0)):
        tensor.CopyFrom(_init(tensor.name, numpy_helper.to_array(tensor) * np.float32(scale)))
    return model


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.6, 0.95])
def test_global_scope_uses_one_threshold_and_hits_the_total(sparsity):
    model = _scaled_model()
    pruned, report = prune_unstructured(model, sparsity, scope="global")
    before, after = _weights(model), _weights(pruned)
    total = sum(before[name].size for name in WEIGHTS)
    assert report.total_elements == total
    assert report.total_zeros_after == sum(np.count_nonzero(after[n] == 0) for n in WEIGHTS) == _k(sparsity, total)
    zeroed = np.concatenate([np.abs(before[n][after[n] == 0]) for n in WEIGHTS])
    kept = np.concatenate([np.abs(before[n][after[n] != 0]) for n in WEIGHTS])
    if sparsity:
        assert zeroed.max() <= kept.min()
        assert report.threshold == pytest.approx(float(zeroed.max()))
        per_layer = {layer.weight: layer.sparsity for layer in report.layers}
        assert per_layer["conv1.w"] > per_layer["fc2.w"]  # small-magnitude layers lose more
    else:
        assert report.threshold is None


def test_global_scope_breaks_ties_to_hit_the_exact_total():
    rng = np.random.default_rng(3)
    wa = rng.integers(-3, 4, size=(8, 8)).astype(np.float32) * 0.25  # few distinct magnitudes
    wb = rng.integers(-3, 4, size=(8, 5)).astype(np.float32) * 0.25
    model = _model(
        [
            helper.make_node("MatMul", ["x", "wa"], ["h"], name="a"),
            helper.make_node("MatMul", ["h", "wb"], ["y"], name="b"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [_init("wa", wa), _init("wb", wb)],
    )
    for sparsity in (0.1, 0.33, 0.5, 0.77):
        pruned, report = prune_unstructured(model, sparsity, scope="global")
        after = _weights(pruned)
        zeros = np.count_nonzero(after["wa"] == 0) + np.count_nonzero(after["wb"] == 0)
        assert zeros == report.total_zeros_after == max(_k(sparsity, 104), report.total_zeros_before)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.sampled_from([np.float16, np.float32, np.float64]),
            st.lists(st.sampled_from([0.0, -0.0, 0.5, -0.5, 1e-3, 2.0, -7.25, 1e-8, 3.0e4]), min_size=1, max_size=40),
        ),
        min_size=1,
        max_size=4,
    ),
    fraction=st.floats(0.0, 1.0),
    gather=st.sampled_from([0, 1 << 22]),
    chunk=st.sampled_from([3, 1 << 22]),
)
def test_global_threshold_matches_a_full_sort(data, fraction, gather, chunk):
    tensors = [_init(f"w{i}", np.array(values, dtype=dtype)) for i, (dtype, values) in enumerate(data)]
    everything = np.sort(np.concatenate([np.abs(np.array(v, dtype=d)).astype(np.float64) for d, v in data]))
    k = max(1, min(everything.size, round(fraction * everything.size)))
    with mock.patch.object(unstructured, "_GATHER_LIMIT", gather), mock.patch.object(unstructured, "_CHUNK", chunk):
        threshold, ties = unstructured._global_threshold(tensors, k)
    assert threshold == everything[k - 1]
    assert ties == k - np.count_nonzero(everything < threshold)


def test_global_scope_with_small_chunks_and_no_gather():
    model = _scaled_model()
    expected, expected_report = prune_unstructured(model, 0.4, scope="global")
    with mock.patch.object(unstructured, "_GATHER_LIMIT", 0), mock.patch.object(unstructured, "_CHUNK", 5):
        pruned, report = prune_unstructured(model, 0.4, scope="global")
    assert pruned.SerializeToString() == expected.SerializeToString()
    assert report.threshold == expected_report.threshold


# ----------------------------------------------------------------------------------------- N:M pattern


def _rows(name, w):
    """Independent view of each weight as [output feature, reduction K]."""
    return {
        "conv1.w": lambda: w.reshape(w.shape[0], -1),
        "conv2.w": lambda: w.reshape(w.shape[0], -1),
        "fc1.w": lambda: w,  # transB=1
        "mm.w": lambda: w.T,
        "fc2.w": lambda: w.T,  # transB=0
    }[name]()


def _check_groups(before_rows, after_rows, n, m):
    full = before_rows.shape[1] - before_rows.shape[1] % m
    g0 = before_rows[:, :full].reshape(-1, m)
    g1 = after_rows[:, :full].reshape(-1, m)
    assert (np.count_nonzero(g1, axis=1) <= n).all()
    top = np.sort(np.abs(g0), axis=1)[:, m - n :]
    np.testing.assert_array_equal(np.sort(np.abs(g1), axis=1)[:, m - n :], top)  # the n largest survive
    np.testing.assert_array_equal(after_rows[:, full:], before_rows[:, full:])  # remainder dense


@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (1, 2), (4, 8), (3, 3)])
def test_pattern_keeps_n_largest_of_every_m_along_the_reduction_axis(pattern):
    n, m = pattern
    model = mixed_model()
    pruned, report = prune_unstructured(model, 1 - n / m, pattern=pattern)
    before, after = _weights(model), _weights(pruned)
    assert report.pattern == pattern and report.sparsity == pytest.approx(1 - n / m)
    for layer in report.layers:
        r0, r1 = _rows(layer.weight, before[layer.weight]), _rows(layer.weight, after[layer.weight])
        _check_groups(r0, r1, n, m)
        assert layer.dense_remainder == r0.shape[0] * (r0.shape[1] % m)
    _valid(pruned)


@pytest.mark.parametrize("op_type,gates", [("LSTM", 4), ("GRU", 3)])
def test_recurrent_w_and_r_keep_n_of_every_m_along_their_input_axis(op_type, gates):
    """W [dirs, gates*H, in] and R [dirs, gates*H, H]: each row reads the input (W) or the previous state (R) on its
    last axis; B stays dense, and the model still runs."""
    rng = np.random.default_rng(0)
    h, k = 6, 8
    inits = [_init("w", _rand(rng, 2, gates * h, k)), _init("r", _rand(rng, 2, gates * h, h)),
             _init("b", _rand(rng, 2, 2 * gates * h))]
    node = helper.make_node(op_type, ["x", "w", "r", "b"], ["y"], hidden_size=h, direction="bidirectional")
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 2, 1, h])], inits)
    pruned, report = prune_unstructured(model, 0.5, pattern=(2, 4))
    before, after = _weights(model), _weights(pruned)
    assert sorted(layer.weight for layer in report.layers) == ["r", "w"]
    for name in ("w", "r"):
        _check_groups(before[name].reshape(-1, before[name].shape[-1]), after[name].reshape(-1, after[name].shape[-1]),
                      2, 4)
    np.testing.assert_array_equal(after["b"], before["b"])
    _valid(pruned)
    assert _run(pruned, {"x": _rand(rng, 5, 1, k)})[0].shape == (5, 2, 1, h)


def test_pattern_2_4_leaves_a_remainder_dense_and_reports_it():
    model = mixed_model()
    pruned, report = prune_unstructured(model, 0.5, pattern=(2, 4))
    by_name = {layer.weight: layer for layer in report.layers}
    assert by_name["conv1.w"].dense_remainder == 0  # K = 4*3*3 = 36
    assert by_name["conv2.w"].dense_remainder == 8 * 2  # K = 2*3*3 = 18 -> 2 dense per row
    assert by_name["mm.w"].dense_remainder == 6 * 2  # K = 10
    assert by_name["fc2.w"].dense_remainder == 12 * 2  # K = 6
    assert report.total_dense_remainder == 52
    assert "dense remainder" in report.format_table()


def test_pattern_on_small_chunks_matches_one_chunk():
    model = mixed_model()
    expected, _ = prune_unstructured(model, 0.5, pattern=(2, 4))
    with mock.patch.object(unstructured, "_CHUNK", 7):
        pruned, _ = prune_unstructured(model, 0.5, pattern=(2, 4))
    assert pruned.SerializeToString() == expected.SerializeToString()


def test_pattern_on_grouped_conv_transpose_and_constant_matmul_a():
    rng = np.random.default_rng(5)
    wt = _rand(rng, 4, 3, 2, 2)  # ConvTranspose [Cin=4, Cout/g=3, 2, 2], group=2 -> K per row = 2*2*2 = 8
    wa = _rand(rng, 5, 8)  # constant A of MatMul(A, h): reduction along its last axis
    model = _model(
        [
            helper.make_node("ConvTranspose", ["x", "wt"], ["t"], name="deconv", group=2),
            helper.make_node("Reshape", ["t", "shape"], ["h"], name="reshape"),
            helper.make_node("MatMul", ["wa", "h"], ["y"], name="mm_a"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 3])],
        [_init("wt", wt), _init("shape", np.array([8, 3], np.int64)), _init("wa", wa)],
    )
    pruned, report = prune_unstructured(model, 0.5, pattern=(2, 4))
    after = _weights(pruned)
    rows_before = np.concatenate([wt[j * 2 : (j + 1) * 2, o].reshape(1, -1) for j in range(2) for o in range(3)])
    rows_after = np.concatenate(
        [after["wt"][j * 2 : (j + 1) * 2, o].reshape(1, -1) for j in range(2) for o in range(3)]
    )
    _check_groups(rows_before, rows_after, 2, 4)
    _check_groups(wa, after["wa"], 2, 4)
    assert [layer.weight for layer in report.layers] == ["wt", "wa"]
    _valid(pruned)
    assert [o.shape for o in _run(pruned, _feeds(pruned))] == [(5, 3)]


def test_pattern_on_a_batched_constant_matmul_weight():
    w = _rand(np.random.default_rng(2), 2, 8, 3)  # [batch, K, N]
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="bmm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 3])],
        [_init("w", w)],
    )
    pruned, report = prune_unstructured(model, 0.5, pattern=(2, 4))
    after = _weights(pruned)["w"]
    _check_groups(np.swapaxes(w, 1, 2).reshape(6, 8), np.swapaxes(after, 1, 2).reshape(6, 8), 2, 4)
    assert report.layers[0].zeros_after == 24
    _valid(pruned)


def test_pattern_shared_by_different_reduction_axes_is_skipped():
    rng = np.random.default_rng(0)
    w = _rand(rng, 8, 8)
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),  # K on axis 0
            helper.make_node("Gemm", ["h", "w"], ["y"], name="gemm", transB=1),  # K on axis 1
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [_init("w", w)],
    )
    _, report = prune_unstructured(model, 0.5, pattern=(2, 4))
    assert not report.layers
    assert "different axes" in report.skipped[0].reason
    _, report = prune_unstructured(model, 0.5)  # without a pattern the axis does not matter
    assert report.layers[0].nodes == ("mm", "gemm")


# --------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_sparsity_outside_the_range_raises_a_one_line_option_error(sparsity):
    with pytest.raises(OptionError) as info:
        prune_unstructured(mixed_model(), sparsity)
    assert "\n" not in str(info.value) and "sparsity" in str(info.value)
    assert isinstance(info.value, OnnxPruneError)


def test_pattern_and_sparsity_must_agree():
    model = mixed_model()
    with pytest.raises(OptionError, match="2:4 means sparsity 0.5"):
        prune_unstructured(model, 0.3, pattern=(2, 4))
    prune_unstructured(model, 0.5, pattern=(2, 4))
    _, report = prune_unstructured(model, 0.33, pattern=(2, 3))  # typed to two digits: accepted
    assert report.sparsity == pytest.approx(1 / 3)
    with pytest.raises(OptionError, match="pattern 2:4 keeps 2 of every 4 weights within each layer, so scope "
                                          "'global' .* give sparsity alone") as info:
        prune_unstructured(model, 0.5, scope="global", pattern=(2, 4))
    assert "--" not in str(info.value)  # the API names its parameters, the command line its options (below)


def test_pattern_errors_name_the_options_on_the_command_line(tmp_path):
    from cli_run import assert_error, run

    onnx.save(mixed_model(), tmp_path / "m.onnx")
    args = ["prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--unstructured", "--pattern", "2:4"]
    assert_error(run(*args, "--scope", "global"), 1, "--pattern 2:4 keeps 2 of every 4 weights within each layer, "
                 "so --scope 'global'", "drop the global scope, or give --sparsity alone")
    assert_error(run(*args, "--sparsity", "0.3"), 1, "--pattern 2:4 means --sparsity 0.5, but 0.3 was given")


@pytest.mark.parametrize("pattern", [(0, 4), (5, 4), (2,), (2.0, 4), (True, 4), "2:4", [2, 4, 8]])
def test_malformed_patterns_raise(pattern):
    with pytest.raises(OptionError):
        prune_unstructured(mixed_model(), 0.5, pattern=pattern)


def test_parse_pattern():
    assert parse_pattern("2:4") == (2, 4)
    assert parse_pattern(" 1:8 ") == (1, 8)
    for text in ("2-4", "2:", "a:b", "4:2", "0:4", "2:4:8"):
        with pytest.raises(OptionError):
            parse_pattern(text)


def test_unknown_scope_raises():
    with pytest.raises(OptionError, match="scope"):
        prune_unstructured(mixed_model(), 0.5, scope="model")


# ------------------------------------------------------------------------------- dtypes and storage


def _fp16_model(raw: bool):
    rng = np.random.default_rng(0)
    wc = _rand(rng, 6, 3, 3, 3, dtype=np.float16)
    wm = _rand(rng, 6, 4, dtype=np.float16)
    if raw:
        inits = [_init("wc", wc), _init("wm", wm)]
    else:  # fp16 values kept in int32_data, as helper.make_tensor does
        inits = [
            helper.make_tensor("wc", TensorProto.FLOAT16, wc.shape, wc.ravel()),
            helper.make_tensor("wm", TensorProto.FLOAT16, wm.shape, wm.ravel()),
        ]
        assert not inits[0].HasField("raw_data")
    return _model(
        [
            helper.make_node("Conv", ["x", "wc"], ["c"], name="conv"),
            helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
            helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
            helper.make_node("MatMul", ["f", "wm"], ["y"], name="mm"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])],
        inits,
    )


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_fp16_weights_keep_their_dtype(raw, scope):
    model = _fp16_model(raw)
    pruned, report = prune_unstructured(model, 0.5, scope=scope)
    for tensor in pruned.graph.initializer:
        assert tensor.data_type == TensorProto.FLOAT16
    after = _weights(pruned)
    assert {layer.dtype for layer in report.layers} == {"float16"}
    if scope == "layer":
        assert np.count_nonzero(after["wc"] == 0) == _k(0.5, 162)
    assert report.total_zeros_after == _k(0.5, 162 + 24)
    _valid(pruned)
    out = _run(pruned, _feeds(pruned))
    assert out[0].dtype == np.float16 and out[0].shape == (1, 4)


def test_float64_weights_keep_their_dtype():
    rng = np.random.default_rng(0)
    model = _model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", transB=1)],
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 5])],
        [_init("w", _rand(rng, 5, 6, dtype=np.float64)), _init("b", _rand(rng, 5, dtype=np.float64))],
    )
    pruned, report = prune_unstructured(model, 0.4, pattern=None)
    w = _weights(pruned)["w"]
    assert w.dtype == np.float64 and np.count_nonzero(w == 0) == 12
    _valid(pruned)
    assert _run(pruned, _feeds(pruned))[0].dtype == np.float64


def test_non_float_and_quantized_weights_are_skipped_with_a_reason():
    rng = np.random.default_rng(0)
    model = _model(
        [
            helper.make_node("DequantizeLinear", ["wq", "scale", "zp"], ["wd"], name="dq"),
            helper.make_node("Conv", ["x", "wd"], ["c"], name="qconv"),
            helper.make_node("MatMul", ["i", "wi"], ["yi"], name="int_mm"),
            helper.make_node("MatMul", ["c2", "c3"], ["yy"], name="act_mm"),
            helper.make_node("Identity", ["c"], ["c2"], name="id1"),
            helper.make_node("Identity", ["c"], ["c3"], name="id2"),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3]),
            helper.make_tensor_value_info("i", TensorProto.INT32, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4, 1, 1]),
            helper.make_tensor_value_info("yi", TensorProto.INT32, [1, 3]),
            helper.make_tensor_value_info("yy", TensorProto.FLOAT, [1, 4, 1, 1]),
        ],
        [
            _init("wq", rng.integers(-100, 100, (4, 2, 3, 3)).astype(np.int8)),
            _init("scale", np.float32(0.02)),
            _init("zp", np.int8(0)),
            _init("wi", rng.integers(-5, 5, (4, 3)).astype(np.int32)),
        ],
    )
    pruned, report = prune_unstructured(model, 0.5)
    assert report.layers == []
    reasons = {skip.node: skip.reason for skip in report.skipped}
    assert "int8" in reasons["qconv"] and "DequantizeLinear" in reasons["qconv"]
    assert "int32" in reasons["int_mm"]
    assert "no constant input" in reasons["act_mm"]
    assert pruned.SerializeToString() == model.SerializeToString()


def test_external_data_that_was_not_loaded_is_skipped_not_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = mixed_model()
    tensor = next(t for t in model.graph.initializer if t.name == "mm.w")
    onnx.external_data_helper.set_external_data(tensor, location="missing.bin", offset=0, length=240)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    _, report = prune_unstructured(model, 0.5)
    assert "mm.w" not in {layer.weight for layer in report.layers}
    assert "external data" in next(s.reason for s in report.skipped if s.weight == "mm.w")


# ------------------------------------------------------------------------------ finding the weights


def test_constant_node_weights_and_identity_chains():
    rng = np.random.default_rng(0)
    wc, wm = _rand(rng, 4, 3, 1, 1), _rand(rng, 4, 5)
    model = _model(
        [
            helper.make_node("Constant", [], ["wc"], name="const_c", value=_init("wc_value", wc)),
            helper.make_node("Identity", ["wc"], ["wc_id"], name="id_a"),
            helper.make_node("Identity", ["wc_id"], ["wc_id2"], name="id_b"),
            helper.make_node("Conv", ["x", "wc_id2"], ["c"], name="conv"),
            helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
            helper.make_node("Constant", [], ["wm"], name="const_m", value=_init("wm_value", wm)),
            helper.make_node("MatMul", ["f", "wm"], ["y"], name="mm"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
    )
    pruned, report = prune_unstructured(model, 0.5)
    assert [(layer.weight, layer.nodes) for layer in report.layers] == [("wc", ("conv",)), ("wm", ("mm",))]
    after = _weights(pruned)
    assert np.count_nonzero(after["wc"] == 0) == 6 and np.count_nonzero(after["wm"] == 0) == 10
    assert _without_weight_values(pruned, {"wc", "wm"}) == _without_weight_values(model, {"wc", "wm"})
    _valid(pruned)
    assert _run(pruned, _feeds(pruned))[0].shape == (1, 5)


def test_shared_weight_is_zeroed_once_and_reported_once():
    rng = np.random.default_rng(0)
    w = _rand(rng, 4, 4, 3, 3)
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c1"], name="conv_a", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r"], name="relu"),
            helper.make_node("Identity", ["w"], ["w_alias"], name="alias"),
            helper.make_node("Conv", ["r", "w_alias"], ["y"], name="conv_b", pads=[1, 1, 1, 1]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        [_init("w", w)],
    )
    for scope in ("layer", "global"):
        pruned, report = prune_unstructured(model, 0.3, scope=scope)
        assert len(report.layers) == 1
        layer = report.layers[0]
        assert layer.nodes == ("conv_a", "conv_b") and layer.node == "conv_a, conv_b"
        assert report.total_elements == w.size
        assert np.count_nonzero(_weights(pruned)["w"] == 0) == _k(0.3, w.size)
        _valid(pruned)
        assert _run(pruned, _feeds(pruned))[0].shape == (1, 4, 5, 5)


def test_weight_shared_with_an_excluded_node_is_left_alone():
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="keep_me"),
            helper.make_node("MatMul", ["h", "w"], ["y"], name="prune_me"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [_init("w", _rand(np.random.default_rng(0), 4, 4))],
    )
    pruned, report = prune_unstructured(model, 0.5, exclude=["keep_*"])
    assert report.layers == []
    assert "shared with excluded node keep_me" in report.skipped[0].reason
    assert pruned.SerializeToString() == model.SerializeToString()


def test_weight_also_read_elsewhere_is_left_alone():
    rng = np.random.default_rng(0)
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Add", ["h", "w"], ["y"], name="add"),  # w also used as an addend
            helper.make_node("MatMul", ["x", "v"], ["z"], name="mm_out"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 4]),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [4, 4]),  # a graph output too
        ],
        [_init("w", _rand(rng, 4, 4)), _init("v", _rand(rng, 4, 4))],
    )
    _, report = prune_unstructured(model, 0.5)
    assert report.layers == []
    reasons = {skip.weight: skip.reason for skip in report.skipped}
    assert "input 1 of Add node add" in reasons["w"]
    assert "graph output" in reasons["v"]


def test_subgraphs_are_reported_and_weights_they_read_are_left_alone():
    rng = np.random.default_rng(0)
    branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["b_out"], name="inner_mm")],  # reads the outer w
        "branch", [], [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [1, 4])],
    )
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="outer_mm"),
            helper.make_node("If", ["cond"], ["y"], name="branchy", then_branch=branch, else_branch=branch),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
        ],
        [_init("w", _rand(rng, 4, 4))],
    )
    pruned, report = prune_unstructured(model, 0.5)
    assert report.layers == []
    reasons = [(skip.node, skip.reason) for skip in report.skipped]
    assert reasons[0] == ("outer_mm", "also read as a subgraph of node branchy, not only as a weight")
    assert [node for node, _ in reasons[1:]] == ["branchy/inner_mm", "branchy/inner_mm"]
    assert "only the top graph is pruned" in reasons[1][1]
    assert pruned.SerializeToString() == model.SerializeToString()


def test_exclude_globs_match_node_names():
    model = mixed_model()
    pruned, report = prune_unstructured(model, 0.5, exclude=["conv*", "fc2"])
    assert [layer.weight for layer in report.layers] == ["fc1.w", "mm.w"]
    skipped = {skip.node: skip.reason for skip in report.skipped}
    assert skipped == {"conv1": "excluded by 'conv*'", "conv2": "excluded by 'conv*'", "fc2": "excluded by 'fc2'"}
    before, after = _weights(model), _weights(pruned)
    for name in ("conv1.w", "conv2.w", "fc2.w"):
        np.testing.assert_array_equal(before[name], after[name])
    _, report = prune_unstructured(model, 0.5, exclude="mm")  # one string is one glob
    assert "mm.w" not in [layer.weight for layer in report.layers]


# ------------------------------------------------------------------------------- safety of the copy


def _without_weight_values(model, names):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    tensors = [t for t in copy.graph.initializer if t.name in names]
    tensors += [n.attribute[0].t for n in copy.graph.node if n.op_type == "Constant" and n.output[0] in names]
    for tensor in tensors:
        for field in ("raw_data", "float_data", "int32_data", "double_data"):
            tensor.ClearField(field)
    return copy.SerializeToString()


def test_the_copy_keeps_everything_but_the_weight_values():
    model = mixed_model()
    model.producer_name, model.doc_string, model.graph.doc_string = "test", "model doc", "graph doc"
    onnx.helper.set_model_props(model, {"author": "me"})
    model.graph.value_info.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, 8, 8, 8]))
    model.graph.initializer[0].doc_string = "conv1 weight"
    model.graph.node.insert(0, helper.make_node("Constant", [], ["unused_c"], name="k", value_floats=[1.0, 2.0]))
    model.graph.output.append(helper.make_tensor_value_info("unused_c", TensorProto.FLOAT, [2]))
    pruned, report = prune_unstructured(model, 0.5)
    assert report.total_zeros_after > 0
    assert _without_weight_values(pruned, WEIGHTS) == _without_weight_values(model, WEIGHTS)
    assert pruned.graph.initializer[0].doc_string == "conv1 weight"


@pytest.mark.parametrize(
    "kwargs", [dict(sparsity=0.5), dict(sparsity=0.7, scope="global"), dict(sparsity=0.5, pattern=(2, 4))]
)
def test_input_model_is_not_mutated(kwargs):
    model = mixed_model()
    before = model.SerializeToString()
    pruned, _ = prune_unstructured(model, **kwargs)
    assert model.SerializeToString() == before
    assert pruned.SerializeToString() != before


@pytest.mark.parametrize(
    "kwargs", [dict(sparsity=0.5), dict(sparsity=0.8, scope="global"), dict(sparsity=0.5, pattern=(2, 4))]
)
def test_output_is_valid_and_runs_with_the_same_shapes(kwargs):
    model = mixed_model()
    pruned, _ = prune_unstructured(model, **kwargs)
    _valid(pruned)
    feeds = _feeds(model)
    dense, sparse = _run(model, feeds), _run(pruned, feeds)
    assert [o.shape for o in sparse] == [o.shape for o in dense]
    assert [i.name for i in pruned.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in pruned.graph.output] == [o.name for o in model.graph.output]
    assert not np.array_equal(dense[0], sparse[0])


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_sparsity_zero_is_bit_identical(scope):
    model = mixed_model()
    pruned, report = prune_unstructured(model, 0.0, scope=scope)
    assert pruned.SerializeToString() == model.SerializeToString()
    feeds = _feeds(model)
    for a, b in zip(_run(model, feeds), _run(pruned, feeds)):
        assert a.tobytes() == b.tobytes()
    assert report.total_zeros_after == report.total_zeros_before == 0


@pytest.mark.parametrize(
    "kwargs", [dict(sparsity=0.9), dict(sparsity=0.9, scope="global"), dict(sparsity=0.75, pattern=(1, 4))]
)
def test_biases_and_other_constants_are_untouched(kwargs):
    model = mixed_model()
    pruned, report = prune_unstructured(model, **kwargs)
    others = {t.name: t.SerializeToString() for t in model.graph.initializer if t.name not in WEIGHTS}
    assert others.keys() == {"conv1.b", "bn.scale", "bn.bias", "bn.mean", "bn.var", "fc1.b", "mm.b"}
    for tensor in pruned.graph.initializer:
        if tensor.name in others:
            assert tensor.SerializeToString() == others[tensor.name]
    assert {layer.weight for layer in report.layers} == set(WEIGHTS)


def test_unnamed_nodes_get_a_label():
    model = mixed_model()
    for node in model.graph.node:
        node.name = ""
    _, report = prune_unstructured(model, 0.5, exclude=["Gemm_*"])
    assert [layer.node for layer in report.layers] == ["Conv_0", "Conv_3", "MatMul_7"]


# ---------------------------------------------------------------------------------------------- report


def test_report_dict_and_table():
    model = mixed_model()
    _, report = prune_unstructured(model, 0.5, scope="global", exclude=["fc2"])
    assert isinstance(report, UnstructuredReport)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["scope"] == "global" and data["pattern"] is None and data["exclude"] == ["fc2"]
    assert [layer["weight"] for layer in data["layers"]] == ["conv1.w", "conv2.w", "fc1.w", "mm.w"]
    assert data["layers"][0]["shape"] == [8, 4, 3, 3] and data["layers"][0]["nodes"] == ["conv1"]
    assert data["totals"]["elements"] == report.total_elements == 288 + 144 + 80 + 60
    assert data["totals"]["zeros_after"] == _k(0.5, report.total_elements)
    assert data["skipped"] == [{"nodes": ["fc2"], "weight": "fc2.w", "reason": "excluded by 'fc2'"}]
    table = report.format_table()
    assert "conv1.w" in table and "8x4x3x3" in table and "total" in table
    assert "global magnitude threshold" in table and "fc2 [fc2.w]: excluded" in table
    assert "no speedup" in table
    assert len({len(line) for line in table.splitlines()[2:4]}) == 1  # header and rule align
