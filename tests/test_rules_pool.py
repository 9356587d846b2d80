"""Op rules for pooling and reductions (onnxprune/deps/ops/pool.py), checked against the masking oracle."""

import numpy as np
import pytest

from graphs import Builder, assert_blocked_by, groups_of, out_group
from oracle_check import assert_matches_oracle


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


POOLS = {
    "MaxPool": lambda b, h: b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2]),
    "MaxPool-pads-dilations": lambda b, h: b.op("MaxPool", [h], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                                dilations=[2, 2]),
    "AveragePool": lambda b, h: b.op("AveragePool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "LpPool": lambda b, h: b.op("LpPool", [h], kernel_shape=[2, 2], p=2),
    "GlobalAveragePool": lambda b, h: b.op("GlobalAveragePool", [h]),
    "GlobalMaxPool": lambda b, h: b.op("GlobalMaxPool", [h]),
    "GlobalLpPool": lambda b, h: b.op("GlobalLpPool", [h], p=2),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_passes_channels_through(name):
    """x -> Conv(8) -> Relu -> POOL -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    h = POOLS[name](b, b.op("Relu", [b.conv(x, 3, 8, name="conv1")]))
    b.output(b.conv(h, 8, 4, k=1, name="conv2"))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_pool_1d_and_3d():
    """x[N,3,L] -> Conv1d(8) -> MaxPool1d -> Conv1d(4) -> y1;  z[N,3,D,H,W] -> Conv3d(8) -> AvgPool3d -> Conv3d(4) -> y2"""
    b = Builder()
    x = b.input("x", ["N", 3, 10])
    z = b.input("z", ["N", 3, 4, 4, 4])
    h = b.op("MaxPool", [b.conv(x, 3, 8, dims=1, name="c1")], kernel_shape=[2], strides=[2])
    k = b.op("AveragePool", [b.conv(z, 3, 8, dims=3, name="c3")], kernel_shape=[2, 2, 2])
    b.output(b.conv(h, 8, 4, dims=1, name="c1b"), b.conv(k, 8, 4, dims=3, name="c3b"))
    result = prune(b.build())
    assert out_group(result, "c1").prunable and out_group(result, "c1").kept == 4
    assert out_group(result, "c3").prunable and out_group(result, "c3").kept == 4


def test_maxpool_indices_used_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> MaxPool -+-> Conv(4) -> y
                                                   \-> Indices -> idx      (flat indices hold C*H*W)"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    p, idx = b.op("MaxPool", [b.conv(h, 8, 8, name="conv2")], outputs=2, name="pool", kernel_shape=[2, 2],
                  strides=[2, 2])
    b.output(b.conv(p, 8, 4, name="conv3"), idx)
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "MaxPool 'pool'", "Indices")


def test_maxpool_indices_consumed_by_a_node_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> MaxPool -+-> Conv(4) -> y
                                                   \-> Indices -> Cast -> ReduceMax -> m"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    p, idx = b.op("MaxPool", [b.conv(h, 8, 8, name="conv2")], outputs=2, name="pool", kernel_shape=[2, 2],
                  strides=[2, 2])
    m = b.op("ReduceMax", [b.op("Cast", [idx], to=1)], keepdims=0)
    b.output(b.conv(p, 8, 4, name="conv3"), m)
    result = prune(b.build())
    assert_blocked_by(out_group(result, "conv2"), "MaxPool 'pool'", "Indices")


def test_maxpool_unused_indices_output_is_fine():
    """x -> Conv(8) -> MaxPool(values, indices unused) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    p, _ = b.op("MaxPool", [b.conv(x, 3, 8, name="conv1")], outputs=2, name="pool", kernel_shape=[2, 2])
    b.output(b.conv(p, 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_over_spatial_axes(opset, keepdims):
    """x -> Conv(8) -> Relu -> ReduceMean(axes [2,3], keepdims) -> Conv1x1(4) | Gemm(4) -> y

    opset 13 gives axes as an attribute, opset 18 as an input."""
    b = Builder(opset)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    if opset >= 18:
        r = b.op("ReduceMean", [h, b.ints([2, 3], "axes")], name="mean", keepdims=keepdims)
    else:
        r = b.op("ReduceMean", [h], name="mean", axes=[2, 3], keepdims=keepdims)
    y = b.conv(r, 8, 4, k=1, name="head") if keepdims else b.gemm(r, 8, 4, name="head", transB=1)
    b.output(y)
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "head"]


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"])
def test_other_reductions_over_negative_spatial_axes(op):
    """opset 13: x -> Conv(8) -> REDUCE(axes [-1], keepdims 0) -> Relu -> Conv1d(4) -> y"""
    b = Builder(13)
    x = b.input("x", ["N", 3, 6, 6])
    r = b.op(op, [b.conv(x, 3, 8, name="conv1")], name="red", axes=[-1], keepdims=0)
    b.output(b.conv(b.op("Relu", [r]), 8, 4, dims=1, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


def test_reduce_over_batch_axis_shifts_the_channel_axis():
    """x -> Conv(8) -> ReduceMean(axes [0], keepdims 0) [8,H,W] -> Unsqueeze(0) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", [2, 3, 6, 6])
    r = b.op("ReduceMean", [b.conv(x, 3, 8, name="conv1")], axes=[0], keepdims=0)
    b.output(b.conv(b.op("Unsqueeze", [r, b.ints([0], "ax")]), 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


@pytest.mark.parametrize("opset", [11, 13])
def test_reduce_sum_over_channels_is_blocked(opset):
    """x -> Conv(8) -> Relu -> Conv(8) -> ReduceSum(axes [1], keepdims 1) -> Conv(4) -> y"""
    b = Builder(opset)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.conv(h, 8, 8, name="conv2")
    if opset >= 13:  # ReduceSum takes axes as an input from opset 13
        r = b.op("ReduceSum", [h, b.ints([1], "axes")], name="sum", keepdims=1)
    else:
        r = b.op("ReduceSum", [h], name="sum", axes=[1], keepdims=1)
    b.output(b.conv(r, 1, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "ReduceSum 'sum'", "reduces over the channel axis")


def test_reduce_over_all_axes_is_blocked():
    """x -> Conv(8) -> Relu -> Conv(8) -> ReduceMean() (all axes) -> y2;  ... -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.conv(h, 8, 8, name="conv2")
    b.output(b.conv(h, 8, 4, name="conv3"), b.op("ReduceMean", [h], name="mean", keepdims=0))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "ReduceMean 'mean'", "reduces over the channel axis")


def test_argmax_over_channels_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> ArgMax(axis=1) -> cls
                                        \-> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.conv(h, 8, 8, name="conv2")
    b.output(b.conv(h, 8, 4, name="conv3"), b.op("ArgMax", [h], name="argmax", axis=1))
    result = prune(b.build())
    assert_blocked_by(out_group(result, "conv2"), "ArgMax 'argmax'", "reduces over the channel axis")


def test_reduce_with_empty_axes_input_reduces_everything():
    r"""opset 18: x -> Conv(8) -> Relu -+-> ReduceMean(axes = [] constant) [N,1,1,1] -> Add -> Conv(4) -> y
                                       \------------------------------------------/

    An empty axes input means "every axis" (without noop_with_empty_axes): the channels are averaged.
    (Bug fixed: the empty list was taken as "no axis", the channels passed through, and pruning changed
    the mean.)"""
    b = Builder(18)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Relu", [b.conv(h, 8, 8, name="conv2")])
    m = b.op("ReduceMean", [h, b.const(np.zeros(0, np.int64), "axes")], name="mean", keepdims=1)
    b.output(b.conv(b.op("Add", [h, m]), 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "ReduceMean 'mean'", "reduces over the channel axis")


def test_reduce_with_empty_axes_and_noop_passes():
    r"""opset 18: x -> Conv(8) -> ReduceMean(axes = [], noop_with_empty_axes=1) -> Relu -> Conv(4) -> y"""
    b = Builder(18)
    x = b.input("x", ["N", 3, 6, 6])
    m = b.op("ReduceMean", [b.conv(x, 3, 8, name="conv1"), b.const(np.zeros(0, np.int64), "axes")], keepdims=1,
             noop_with_empty_axes=1)
    b.output(b.conv(b.op("Relu", [m]), 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]
