"""Op rules for Conv and ConvTranspose (onnxprune/deps/ops/conv.py), checked against the masking oracle."""

import numpy as np
import pytest

import onnxprune
from graphs import (
    Builder, assert_blocked_by, attribute, graph_nodes, groups_of, initializer, out_group, prunable,
)
from oracle_check import assert_matches_oracle


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


def spatial(dims):
    return {1: [10], 2: [6, 6], 3: [4, 4, 4]}[dims]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_plain_conv(dims, bias):
    """x -> Conv(8) -> Relu -> Conv(4) -> y     (1D, 2D, 3D; with and without bias)"""
    b = Builder()
    x = b.input("x", ["N", 3, *spatial(dims)])
    y = b.op("Relu", [b.conv(x, 3, 8, dims=dims, bias=bias, name="conv1")], name="relu")
    b.output(b.conv(y, 8, 4, dims=dims, bias=bias, name="conv2"))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    g = out_group(result, "conv1")
    assert g.prunable and g.channels == 8 and g.kept == 4
    assert g.members == ["conv1", "conv2"]
    assert_blocked_by(out_group(result, "conv2"), "graph output", "keeps its shape")
    pruned = result.model
    assert initializer(pruned, "conv1.w").shape == (4, 3, *[3] * dims)
    assert initializer(pruned, "conv2.w").shape == (4, 4, *[3] * dims)
    if bias:
        assert initializer(pruned, "conv1.b").shape == (4,)
        assert initializer(pruned, "conv2.b").shape == (4,)  # the output group keeps its bias


def test_conv_bn_relu_conv():
    """x -> Conv(8) -> BN -> Relu -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.bn(b.conv(x, 3, 8, name="conv1"), 8, name="bn")])
    b.output(b.conv(y, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "bn", "conv2"]
    for name in ("scale", "bias", "mean", "var"):
        assert initializer(result.model, f"bn.{name}").shape == (4,)


@pytest.mark.parametrize("group", [2, 4])
def test_grouped_conv(group):
    """x -> Conv(8) -> Relu -> Conv(8, group=g) -> Relu -> Conv(4) -> y

    Whole groups of the grouped conv are pruned: one space of g indices, each owning 8/g channels of
    conv1's output and 8/g channels of the grouped conv's output."""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    y = b.op("Relu", [b.conv(y, 8, 8, group=group, name="gconv")])
    b.output(b.conv(y, 8, 4, name="conv3"))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    g = out_group(result, "gconv")
    assert g == out_group(result, "conv1")
    assert g.prunable and g.channels == group and g.kept == group // 2
    assert g.members == ["conv1", "gconv", "conv3"]
    (gconv,) = [n for n in graph_nodes(result.model, "Conv") if n.name == "gconv"]
    assert attribute(gconv, "group") == group // 2
    assert initializer(result.model, "gconv.w").shape == (4, 8 // group, 3, 3)
    assert initializer(result.model, "conv1.w").shape == (4, 3, 3, 3)
    assert initializer(result.model, "conv3.w").shape == (4, 4, 3, 3)


def test_grouped_conv_on_a_graph_input_is_blocked():
    """x(8) -> Conv(8, group=2) -> Relu -> Conv(6) -> Relu -> Conv(4) -> y

    The grouped conv's input cannot shrink, so its groups cannot go; conv2's output still prunes."""
    b = Builder()
    x = b.input("x", ["N", 8, 8, 8])
    y = b.op("Relu", [b.conv(x, 8, 8, group=2, name="gconv")])
    y = b.op("Relu", [b.conv(y, 8, 6, name="conv2")])
    b.output(b.conv(y, 6, 4, name="conv3"))
    result = prune(b.build())
    g = out_group(result, "gconv")
    assert g.members == ["gconv", "conv2"] and g.kept == g.channels == 2
    assert_blocked_by(g, "Conv 'gconv'", "the input of a grouped convolution has channels that cannot be pruned")
    assert out_group(result, "conv2").prunable and out_group(result, "conv2").kept == 3


@pytest.mark.parametrize("sizes, prunable_groups", [([8, 8], [2, 2]), ([4, 12], [1, 3]), ([6, 10], None)])
def test_grouped_conv_after_concat(sizes, prunable_groups):
    r"""x -> ConvA(a) -+-> Concat (16) -> Relu -> Conv(16, group=4) -> Relu -> Conv(4) -> y
    x -> ConvB(b) -+

    The grouped conv's blocks of 4 channels must not straddle two Concat inputs: 8+8 and 4+12 fit (the
    blocks become the groups of each branch), 6+10 cuts a block in two and blocks."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    parts = [b.op("Relu", [b.conv(x, 3, c, name=n)]) for c, n in zip(sizes, ["convA", "convB"])]
    h = b.op("Relu", [b.conv(b.op("Concat", parts, axis=1), 16, 16, group=4, name="gconv")])
    b.output(b.conv(h, 16, 4, name="head"))
    if prunable_groups is None:
        report = onnxprune.analyze(b.build())
        assert not report.prunable_groups
        for g in report.groups:
            if g.members != ["head"]:
                assert_blocked_by(g, "Conv 'gconv'", "cannot match the channels of its input and its groups")
        return
    result = prune(b.build())
    ga, gb = out_group(result, "convA"), out_group(result, "convB")
    assert [ga.channels, gb.channels] == prunable_groups
    assert ga.prunable and gb.prunable and ga.unit == gb.unit == 4
    (gconv,) = [n for n in graph_nodes(result.model, "Conv") if n.name == "gconv"]
    assert attribute(gconv, "group") == ga.kept + gb.kept


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv(multiplier):
    """x -> Conv(8) -> Relu -> DepthwiseConv(8*m, group=8) -> Relu -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    y = b.op("Relu", [b.conv(y, 8, 8 * multiplier, group=8, name="dw")])
    b.output(b.conv(y, 8 * multiplier, 4, name="conv3"))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    g = out_group(result, "dw")
    assert g.prunable and g.channels == 8 and g.kept == 4
    assert g.members == ["conv1", "dw", "conv3"]
    (dw,) = [n for n in graph_nodes(result.model, "Conv") if n.name == "dw"]
    assert attribute(dw, "group") == 4
    assert initializer(result.model, "dw.w").shape == (4 * multiplier, 1, 3, 3)
    assert initializer(result.model, "conv3.w").shape == (4, 4 * multiplier, 3, 3)


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose(group):
    """x -> Conv(8) -> Relu -> ConvTranspose(6, stride 2, group=g, bias) -> Relu -> Conv(4) -> y

    ConvTranspose weight is [C_in, C_out/group, k, k]: axis 0 reads the input, axis 1 produces."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    y = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    w = b.weight([8, 6 // group, 3, 3], "deconv.w")
    y = b.op("ConvTranspose", [y, w, b.weight([6], "deconv.b")], name="deconv", strides=[2, 2], group=group,
             pads=[1, 1, 1, 1], output_padding=[1, 1])
    b.output(b.conv(b.op("Relu", [y]), 6, 4, name="conv3"))
    result = prune(b.build())
    if group == 1:
        assert len(groups_of(result)) == 3
        g_in, g_out = out_group(result, "conv1"), out_group(result, "deconv")
        assert g_in.members == ["conv1", "deconv"] and g_in.kept == 4
        assert g_out.members == ["deconv", "conv3"] and g_out.channels == 6 and g_out.kept == 3
        assert initializer(result.model, "deconv.w").shape == (4, 3, 3, 3)
        assert initializer(result.model, "deconv.b").shape == (3,)
    else:
        assert len(groups_of(result)) == 2
        g = out_group(result, "deconv")
        assert g.members == ["conv1", "deconv", "conv3"] and g.channels == 2 and g.kept == 1
        (node,) = graph_nodes(result.model, "ConvTranspose")
        assert attribute(node, "group") == 1
        assert initializer(result.model, "deconv.w").shape == (4, 3, 3, 3)
        assert initializer(result.model, "deconv.b").shape == (3,)
    assert_blocked_by(out_group(result, "conv3"), "graph output", "keeps its shape")
    assert len(prunable(result)) == len(groups_of(result)) - 1


def test_weight_shared_by_two_convs():
    r"""            /-> ConvA[W] -> Relu -> Conv(4) -> y1
    x -> Conv(8)
                   \-> ConvB[W] -> Relu -> Conv(4) -> y2

    W is one initializer: A and B read the same space and their outputs become one space."""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    w = b.weight([6, 8, 3, 3], "shared.w")
    a = b.op("Relu", [b.conv(h, 8, 6, weight=w, bias=False, name="convA")])
    c = b.op("Relu", [b.conv(h, 8, 6, weight=w, bias=False, name="convB", strides=[2, 2])])
    b.output(b.conv(a, 6, 4, name="conv3"), b.conv(c, 6, 4, name="conv4"))
    result = prune(b.build())
    assert len(prunable(result)) == 2
    g_in = out_group(result, "conv1")
    assert g_in.members == ["conv1", "convA", "convB"] and g_in.kept == 4
    g_shared = out_group(result, "convA")
    assert g_shared == out_group(result, "convB")
    assert g_shared.members == ["convA", "convB", "conv3", "conv4"] and g_shared.channels == 6 and g_shared.kept == 3
    assert initializer(result.model, "shared.w").shape == (3, 4, 3, 3)


def test_weight_shared_by_convs_on_two_inputs_ties_their_spaces():
    """x -> Conv1(8) -> ConvA[W] -> y1
    x -> Conv2(8) -> ConvB[W] -> y2      (W's input axis ties conv1's and conv2's outputs)"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    w = b.weight([4, 8, 3, 3], "shared.w")
    h1 = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h2 = b.op("Relu", [b.conv(x, 3, 8, name="conv2", k=1)])
    b.output(b.conv(h1, 8, 4, weight=w, name="convA"), b.conv(h2, 8, 4, weight=w, name="convB"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g == out_group(result, "conv2")
    assert g.prunable and set(g.members) == {"conv1", "conv2", "convA", "convB"} and g.kept == 4


def test_weight_in_a_constant_node():
    """x -> Conv(8)[Constant W] -> Relu -> Conv(4)[Constant W] -> y     (Paddle-style weights)"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    w1 = b.weight([8, 3, 3, 3], "conv1.w", as_node=True)
    w2 = b.weight([4, 8, 3, 3], "conv2.w", as_node=True)
    y = b.op("Relu", [b.conv(x, 3, 8, weight=w1, name="conv1")])
    b.output(b.conv(y, 8, 4, weight=w2, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]
    assert initializer(result.model, "conv1.w").shape == (4, 3, 3, 3)
    assert initializer(result.model, "conv2.w").shape == (4, 4, 3, 3)
    assert not any(t.name in ("conv1.w", "conv2.w") for t in result.model.graph.initializer)


def test_weight_behind_identity():
    """W -> Identity -> Identity -> Conv(8) -> Relu -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    w = b.op("Identity", [b.op("Identity", [b.weight([8, 3, 3, 3], "conv1.w")])])
    y = b.op("Relu", [b.conv(x, 3, 8, weight=w, name="conv1")])
    b.output(b.conv(y, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4
    assert initializer(result.model, "conv1.w").shape == (4, 3, 3, 3)


def test_weight_behind_cast_from_fp16():
    """W(fp16) -> Cast(fp32) -> Conv(8) -> Relu -> Conv(4) <- Cast(fp32) <- W2(fp16)"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    w1 = b.op("Cast", [b.weight([8, 3, 3, 3], "conv1.w", dtype=np.float16)], to=1)
    w2 = b.op("Cast", [b.weight([4, 8, 3, 3], "conv2.w", dtype=np.float16)], to=1)
    y = b.op("Relu", [b.conv(x, 3, 8, weight=w1, name="conv1")])
    b.output(b.conv(y, 8, 4, weight=w2, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4
    assert initializer(result.model, "conv1.w").dtype == np.float16
    assert initializer(result.model, "conv1.w").shape == (4, 3, 3, 3)
    assert initializer(result.model, "conv2.w").shape == (4, 4, 3, 3)


def test_fp16_model():
    """x(fp16) -> Conv(8) -> Relu -> MaxPool -> Conv(4) -> y(fp16)"""
    b = Builder(dtype=np.float16)
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    b.output(b.conv(y, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4
    assert initializer(result.model, "conv1.w").dtype == np.float16


def test_conv_with_activation_weight_is_blocked():
    """x -> Conv(8) -> Relu -> Conv(6) -> Relu -> Conv(weight = graph input w) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    w = b.input("w", [4, 6, 3, 3])
    y = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    y = b.op("Relu", [b.conv(y, 8, 6, name="conv2")])
    b.output(b.op("Conv", [y, w], name="dynconv", pads=[1, 1, 1, 1]))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    assert out_group(result, "conv1").prunable
    g = out_group(result, "conv2")
    assert g.members == ["conv2"] and g.kept == 6
    assert_blocked_by(g, "Conv 'dynconv'", "weight is not a constant")
