r"""Op rules for Shape and Size and the Gather/Slice reads of shapes (onnxprune/deps/ops/shape.py and the
shape-reading parts of reindex.py), checked against the masking oracle."""

import numpy as np
import onnx
import pytest

from graphs import Builder, assert_blocked_by, initializer, out_group
from oracle_check import assert_matches_oracle


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


def flatten_by_shape(b, h, gather_op: str = "Gather"):
    """Shape(h) -> Gather(0) -> Unsqueeze -> Concat([n, -1]) -> Reshape(h): PyTorch's x.view(x.size(0), -1)."""
    shape = b.op("Shape", [h], name="shape")
    if gather_op == "Gather":
        n = b.op("Unsqueeze", [b.op("Gather", [shape, b.const(np.int64(0), "zero")],
                                    name="gather", axis=0), b.ints([0], "ax")])
    else:
        n = b.op("Slice", [shape, b.ints([0], "s0"), b.ints([1], "s1")], name="slice")
    target = b.op("Concat", [n, b.ints([-1], "minus1")], name="target", axis=0)
    return b.op("Reshape", [h, target], name="reshape")


@pytest.mark.parametrize("read", ["Gather", "Slice"])
def test_shape_gather_batch_unsqueeze_concat_reshape(read):
    r"""x -> Conv(8) -> Relu -+-> Reshape -> Gemm(10) -> y
                             \-> Shape -> Gather(0) -> Unsqueeze -> Concat([n, -1]) -/

    Only the batch entry is read: the channels are pruned and the Reshape target needs no change."""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    b.output(b.gemm(flatten_by_shape(b, h, read), 128, 10, name="fc"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "fc"]
    assert initializer(result.model, "fc.w").shape == (64, 10)


def _channel_count(b, h, how: str):
    """The channel count of h ([1, 8, 4, 4]) as a 1-element vector, read from Shape(h) the way exporters do."""
    shape = b.op("Shape", [h], name="shape")
    if how == "gather-scalar":  # TorchScript: x.size(1)
        c = b.op("Gather", [shape, b.const(np.int64(1), "one")], name="gather")
        return b.op("Unsqueeze", [c, b.ints([0], "ax")])
    if how == "gather-negative":  # x.size(-3), as a 1-element vector
        return b.op("Gather", [shape, b.ints([-3], "idx")], name="gather")
    if how == "slice-squeeze":  # TorchScript's x.size(-3) through Slice -> Squeeze -> Unsqueeze
        c = b.op("Squeeze", [b.op("Slice", [shape, b.ints([-3]), b.ints([-2])], name="slice"), b.ints([0])])
        return b.op("Unsqueeze", [c, b.ints([0], "ax")])
    raise ValueError(how)


@pytest.mark.parametrize("how", ["gather-scalar", "gather-negative", "slice-squeeze"])
def test_shape_channel_count_into_its_own_reshape_target(how):
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> Reshape -> Conv1d(4) -> y
                                        \-> Shape -> (channel entry) -> Concat([1, c, -1]) -/

    The target copies the channel count into the channel position: read at run time, it is the pruned count
    in the pruned model. (Was blocked: "reads the channel count".)"""
    b = Builder()
    x = b.input("x", [1, 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    target = b.op("Concat", [b.ints([1], "batch"), _channel_count(b, h, how), b.ints([-1], "rest")], axis=0)
    h = b.op("Reshape", [h, target], name="reshape")  # [1, 8, 16]
    b.output(b.conv(h, 8, 4, dims=1, name="conv3"))
    result = prune(b.build(), shapes={"x": [1, 3, 4, 4]})
    assert out_group(result, "conv1").prunable
    g = out_group(result, "conv2")
    assert g.prunable and g.kept == 4 and g.members == ["conv2", "conv3"]
    assert "Shape" in {n.op_type for n in result.model.graph.node}  # still read at run time, nothing rewritten


@pytest.mark.parametrize("misuse", ["other-position", "arithmetic", "expand-other-axis"])
def test_shape_channel_count_used_elsewhere_is_blocked(misuse):
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> Reshape / Expand -> ... -> y
                                        \-> Shape -> Gather(1) -> (misuse) -/

    other-position: Reshape([1, 4, c, -1]) puts the count on an axis that holds no channel of its own (the
    channels are cut in halves between axes 1 and 2); arithmetic: Reshape([1, c + 0, -1]);
    expand-other-axis: the count expands a size-1 axis of another tensor."""
    b = Builder()
    x = b.input("x", [1, 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    c = _channel_count(b, h, "gather-scalar")
    if misuse == "expand-other-axis":
        ones = b.const(np.ones((1, 1, 1, 1)), "ones")
        target = b.op("Concat", [b.ints([1, 1]), c, b.ints([1])], axis=0)
        e = b.op("Expand", [ones, target], name="expand")  # [1, 1, 8, 1]
        b.output(b.conv(h, 8, 4, name="conv3"), b.op("Relu", [e]))
    else:
        if misuse == "other-position":
            target = b.op("Concat", [b.ints([1, 4]), c, b.ints([-1])], axis=0)
        else:
            target = b.op("Concat", [b.ints([1]), b.op("Add", [c, b.ints([0])], name="add"), b.ints([-1])], axis=0)
        h = b.op("Reshape", [h, target], name="reshape")
        b.output(b.op("Relu", [h]))
    result = prune(b.build(), shapes={"x": [1, 3, 4, 4]})
    assert out_group(result, "conv1").prunable
    g = out_group(result, "conv2")
    where = {"other-position": ("Reshape 'reshape'", "sets an axis of its output to a channel count"),
             "arithmetic": ("Add 'add'", "computes with a shape that holds a channel count"),
             "expand-other-axis": ("Expand 'expand'", "expands an axis to a channel count")}
    assert_blocked_by(g, *where[misuse])


def test_shape_slice_over_the_channel_entry_is_followed():
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> Reshape -> Conv1d(4) -> y
                                        \-> Shape -> Slice(0:2) -> Concat([n, c, -1]) -/

    Slice(0:2) keeps [n, c]: the target copies both dimensions in place (PyTorch's flatten(2)). (Was
    blocked: "reads the channel count".)"""
    b = Builder()
    x = b.input("x", [1, 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    nc = b.op("Slice", [b.op("Shape", [h]), b.ints([0]), b.ints([2])], name="slice")
    h = b.op("Reshape", [h, b.op("Concat", [nc, b.ints([-1])], axis=0)])
    b.output(b.conv(h, 8, 4, dims=1, name="conv3"))
    result = prune(b.build())
    g = out_group(result, "conv2")
    assert g.prunable and g.kept == 4


@pytest.mark.parametrize("start, end, blocked", [(2, None, False), (0, 1, False), (1, 2, True), (-3, None, True),
                                                  (-2, None, False)])
def test_shape_with_start_end(start, end, blocked):
    r"""opset 15: x -> Conv(8) -> Relu -> Conv(8) -+-> ... -> Conv(4) -> y
                                                  \-> Shape(start, end) -> Gather(0) -> Cast -> s (graph output)

    Gather(0) of Shape(start, end) reads dimension `start`: the channel count when start is 1 or -3, which
    then reaches a graph output."""
    b = Builder(15)
    x = b.input("x", [1, 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    attrs = {"start": start} if end is None else {"start": start, "end": end}
    s = b.op("Gather", [b.op("Shape", [h], name="shape", **attrs), b.ints([0], "zero")], name="gather")
    b.output(b.conv(b.op("Relu", [h]), 8, 4, name="conv3"), b.op("Cast", [s], to=1))
    result = prune(b.build())
    g = out_group(result, "conv2")
    if blocked:
        assert_blocked_by(g, "graph output", "keeps its shape")
    else:
        assert g.prunable and g.kept == 4


def test_shape_as_graph_output_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> Conv(4) -> y
                                        \-> Shape -> s (graph output holds the channel count)"""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    b.output(b.conv(h, 8, 4, name="conv3"), b.op("Shape", [h], name="shape"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "graph output 'shape' keeps its shape")


def test_shape_into_an_op_that_computes_with_it_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> Conv(4) -> y
                                        \-> Shape -> ConstantOfShape -> ReduceSum -> s"""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    z = b.op("ConstantOfShape", [b.op("Shape", [h])], name="cos")
    b.output(b.conv(h, 8, 4, name="conv3"))
    b.output(b.op("ReduceSum", [z], keepdims=0), shape=[])
    result = prune(b.build())
    assert_blocked_by(out_group(result, "conv2"), "ConstantOfShape 'cos'",
                      "ConstantOfShape is not supported (no pruning rule)")


@pytest.mark.parametrize("where", ["before-gather", "after-gather"])
def test_shape_through_casts_then_gather_batch(where):
    r"""x -> Conv(8) -> Relu -+-> Reshape -> Gemm(10) -> y
                             \-> Shape -> Cast(int32) -> Cast(int64) -> Gather(0) -> Unsqueeze -> Concat([n,-1]) -/
                                 (or Shape -> Gather(0) -> Cast(int32) -> Cast(int64) -> Unsqueeze ...)

    Paddle-style casts of the shape vector: the target still copies dimension 0 only."""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    shape = b.op("Shape", [h])

    def casts(t):
        return b.op("Cast", [b.op("Cast", [t], to=6)], to=7)

    if where == "before-gather":
        n = b.op("Gather", [casts(shape), b.const(np.int64(0))])
    else:
        n = casts(b.op("Gather", [shape, b.const(np.int64(0))]))
    y = b.op("Reshape", [h, b.op("Concat", [b.op("Unsqueeze", [n, b.ints([0])]), b.ints([-1])], axis=0)])
    b.output(b.gemm(y, 128, 10, name="fc"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


def test_size_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> Conv(4) -> y
                                        \-> Size -> Cast -> s"""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    b.output(b.conv(h, 8, 4, name="conv3"), b.op("Cast", [b.op("Size", [h], name="size")], to=1))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Size 'size'", "number of elements")


def test_torchscript_expand_and_reshape_of_a_channel_count():
    r"""x -> Conv(8) -> Relu -> Conv(8) = h [1,8,4,4] -> Unsqueeze(2) -> Expand(s') -> Reshape(r) -> Conv(4) -> y
    s  = Concat(n, c, [2], hh, ww)                 (c = Shape(h)[1], the channel count; n, hh, ww other entries)
    s' = Where(Equal(s, ConstantOfShape(Shape(s)) * -1), ConstantOfShape(Shape(s)), s)   (TorchScript's expand
         guard for -1 entries: a channel count is never -1, so the count stays at its place)
    r  = Concat(n, c * 2, hh, ww)                  (HF's repeat_kv: num_key_value_heads * n_rep)

    Channel i of conv2 becomes channels 2i and 2i+1 of conv3's input: they are pruned together, and the
    Expand and Reshape read the pruned count at run time."""
    b = Builder()
    x = b.input("x", [1, 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    shape = b.op("Shape", [h])
    n, c, hh, ww = (b.op("Unsqueeze", [b.op("Gather", [shape, b.const(np.int64(i))]), b.ints([0])]) for i in range(4))
    s = b.op("Concat", [n, c, b.ints([2]), hh, ww], axis=0)
    ones = b.op("ConstantOfShape", [b.op("Shape", [s])], value=onnx.helper.make_tensor("v", 7, [1], [1]))
    s = b.op("Where", [b.op("Equal", [s, b.op("Mul", [ones, b.ints([-1])])]), ones, s])
    e = b.op("Expand", [b.op("Unsqueeze", [h, b.ints([2])]), s], name="expand")
    r = b.op("Concat", [n, b.op("Mul", [c, b.ints([2])], name="mul"), hh, ww], axis=0)
    b.output(b.conv(b.op("Reshape", [e, r], name="merge"), 16, 4, name="conv3"))
    result = prune(b.build())
    g = out_group(result, "conv2")
    assert g.prunable and g.kept == 4 and g.members == ["conv2", "conv3"]
    assert initializer(result.model, "conv3.w").shape == (4, 8, 3, 3)
