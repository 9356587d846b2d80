"""Op rules for normalizations and softmax (onnxprune/deps/ops/norm.py), checked against the masking oracle."""

import pytest

import onnxprune
from graphs import Builder, assert_blocked_by, initializer, out_group
from oracle_check import assert_matches_oracle


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


def test_batch_normalization():
    """x -> Conv(8) -> BN -> Relu -> Conv(4) -> y       (BN's scale, bias, mean, var are sliced)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.bn(b.conv(x, 3, 8, name="conv1"), 8, name="bn")])
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "bn", "conv2"]
    for p in ("scale", "bias", "mean", "var"):
        assert initializer(result.model, f"bn.{p}").shape == (4,)


def test_batch_normalization_1d():
    """x[N,3,L] -> Conv1d(8) -> BN -> Relu -> Conv1d(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 10])
    h = b.op("Relu", [b.bn(b.conv(x, 3, 8, dims=1, name="conv1"), 8, name="bn")])
    b.output(b.conv(h, 8, 4, dims=1, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").members == ["conv1", "bn", "conv2"]


def test_batch_normalization_after_gemm():
    """x[N,16] -> Gemm(8) -> BN -> Relu -> Gemm(4) -> y     (BatchNorm1d on [N, C])"""
    b = Builder()
    x = b.input("x", ["N", 16])
    h = b.op("Relu", [b.bn(b.gemm(x, 16, 8, name="fc1"), 8, name="bn")])
    b.output(b.gemm(h, 8, 4, name="fc2"))
    result = prune(b.build())
    g = out_group(result, "fc1")
    assert g.prunable and g.kept == 4 and g.members == ["fc1", "bn", "fc2"]


def test_batch_normalization_training_outputs_are_blocked():
    """x -> Conv(8) -> BN(training_mode=1, running mean/var outputs) -> Relu -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.conv(x, 3, 8, name="conv1")
    ins = [h, b.weight([8], "s"), b.weight([8], "bb"), b.weight([8], "m"), b.positive([8], "v")]
    y, mean, var = b.op("BatchNormalization", ins, outputs=3, name="bn", training_mode=1)
    b.output(b.conv(b.op("Relu", [y]), 8, 4, name="conv2"), mean, var)
    report = onnxprune.analyze(b.build())
    (g,) = [g for g in report.groups if "conv1" in g.members]
    assert_blocked_by(g, "BatchNormalization 'bn'", "training-mode")


def test_instance_normalization():
    """x -> Conv(8) -> InstanceNorm -> Relu -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.conv(x, 3, 8, name="conv1")
    h = b.op("InstanceNormalization", [h, b.weight([8], "in.scale"), b.weight([8], "in.bias")], name="in")
    b.output(b.conv(b.op("Relu", [h]), 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "in", "conv2"]
    assert initializer(result.model, "in.scale").shape == (4,)
    assert initializer(result.model, "in.bias").shape == (4,)


@pytest.mark.parametrize("axis", [-1, 2, 3])
def test_layer_norm_over_spatial_axes_passes(axis):
    """x -> Conv(8) -> LayerNorm(axis) -> Relu -> Conv(4) -> y      (NCHW: axis >= 2 leaves C alone)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.conv(x, 3, 8, name="conv1")
    norm_shape = [6, 6][(axis % 4) - 2:]
    h = b.op("LayerNormalization", [h, b.weight(norm_shape, "ln.scale"), b.weight(norm_shape, "ln.bias")],
             name="ln", axis=axis)
    b.output(b.conv(b.op("Relu", [h]), 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]
    assert initializer(result.model, "ln.scale").shape == tuple(norm_shape)


def test_layer_norm_over_last_axis_after_transpose_passes():
    """x -> Conv(8) -> Transpose(0,3,1,2) [N,W,C,H] -> LayerNorm(-1) -> Transpose(0,2,3,1) -> Conv(4) -> y

    After the transpose the last axis is H: channels are left alone."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 5])
    h = b.op("Transpose", [b.conv(x, 3, 8, name="conv1")], perm=[0, 3, 1, 2])
    h = b.op("LayerNormalization", [h, b.weight([6], "ln.scale")], name="ln", axis=-1)
    h = b.op("Transpose", [h], perm=[0, 2, 3, 1])
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_layer_norm_over_channels_after_transpose_is_blocked():
    """x -> Conv(8) -> Relu -> Conv(8) -> Transpose(0,2,3,1) [N,H,W,C] -> LayerNorm(-1) -> Transpose -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Transpose", [b.conv(h, 8, 8, name="conv2")], perm=[0, 2, 3, 1])
    h = b.op("LayerNormalization", [h, b.weight([8], "ln.scale"), b.weight([8], "ln.bias")], name="ln", axis=-1)
    b.output(b.conv(b.op("Transpose", [h], perm=[0, 3, 1, 2]), 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "LayerNormalization 'ln'", "normalizes over the channel axis")
    assert initializer(result.model, "ln.scale").shape == (8,)


@pytest.mark.parametrize("axis", [1, -3])
def test_layer_norm_over_channel_axis_is_blocked(axis):
    """x -> Conv(8) -> Relu -> Conv(8) -> LayerNorm(axis=1: over C,H,W) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("LayerNormalization", [b.conv(h, 8, 8, name="conv2"), b.weight([8, 6, 6], "ln.scale")], name="ln",
             axis=axis)
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "LayerNormalization 'ln'", "normalizes over the channel axis")


def test_layer_norm_in_a_transformer_mlp_is_blocked():
    """x[N,T,16] -> MatMul(8) -> Add -> LayerNorm(-1) -> MatMul(4) -> y      (hidden is the channel axis)"""
    b = Builder()
    x = b.input("x", ["N", 5, 16])
    h = b.matmul(x, 16, 8, name="fc1")
    h = b.op("LayerNormalization", [h, b.weight([8], "ln.scale")], name="ln", axis=-1)
    h = b.matmul(b.op("Relu", [h]), 8, 6, name="fc2")
    b.output(b.matmul(b.op("Relu", [h]), 6, 4, name="fc3"))
    result = prune(b.build())
    assert_blocked_by(out_group(result, "fc1"), "LayerNormalization 'ln'", "normalizes over the channel axis")
    assert out_group(result, "fc2").prunable


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_over_channels_is_blocked(op, opset):
    """x -> Conv(8) -> Relu -> Conv(8) -> Softmax(axis=1) -> Conv(4) -> y"""
    b = Builder(opset)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op(op, [b.conv(h, 8, 8, name="conv2")], name="sm", axis=1)
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), f"{op} 'sm'", "normalizes over the channel axis")


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 2, 3])
def test_softmax_over_another_axis_passes(op, axis):
    """x -> Conv(8) -> Softmax(axis = 2 / 3 / -1) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op(op, [b.conv(x, 3, 8, name="conv1")], name="sm", axis=axis)
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_softmax_default_axis_opset11_over_chw_is_blocked():
    """opset 11: x -> Conv(8) -> Relu -> Conv(8) -> Softmax() -> Conv(4) -> y

    Before opset 13 the default axis is 1 and Softmax flattens [C,H,W] into one axis: channels mix."""
    b = Builder(11)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Softmax", [b.conv(h, 8, 8, name="conv2")], name="sm")
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert_blocked_by(out_group(result, "conv2"), "Softmax 'sm'", "normalizes over the channel axis")


def test_softmax_opset11_over_spatial_axes_passes():
    """opset 11: x -> Conv(8) -> Softmax(axis=2: flattens H,W) -> Conv(4) -> y"""
    b = Builder(11)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Softmax", [b.conv(x, 3, 8, name="conv1")], name="sm", axis=2)
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable


def test_lp_normalization_over_channels_is_blocked_and_over_width_passes():
    """x -> Conv(8) -> LpNorm(axis=-1) -> Relu -> Conv(8) -> LpNorm(axis=1) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.op("LpNormalization", [b.conv(x, 3, 8, name="conv1")], name="lpw", axis=-1)])
    h = b.op("LpNormalization", [b.conv(h, 8, 8, name="conv2")], name="lpc", axis=1)
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4
    assert_blocked_by(out_group(result, "conv2"), "LpNormalization 'lpc'", "normalizes over the channel axis")


def test_group_normalization_has_no_rule():
    """opset 21: x -> Conv(8) -> Relu -> Conv(8) -> GroupNorm(2 groups) -> Conv(4) -> y      (blocked)"""
    b = Builder(21)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("GroupNormalization", [b.conv(h, 8, 8, name="conv2"), b.weight([8], "gn.s"), b.weight([8], "gn.b")],
             name="gn", num_groups=2)
    b.output(b.conv(h, 8, 4, name="conv3"), shape=["N", 4, 6, 6])  # onnx infers no shape through GroupNorm
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "GroupNormalization 'gn'", "not supported")
