r"""Op rules that move channels (onnxprune/deps/ops/reindex.py): Concat, Split, Slice, Flatten, Reshape,
Squeeze/Unsqueeze/Transpose, Gather, Resize/Upsample and Pad, checked against the masking oracle."""

import numpy as np
import onnx
import pytest

import onnxprune
from graphs import (
    Builder, assert_blocked_by, attribute, graph_nodes, groups_of, initializer, out_group, out_groups, prunable,
    shared_reshape_target,
)
from oracle_check import assert_matches_oracle


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


def node(model, op_type):
    (n,) = graph_nodes(model, op_type)
    return n


def ints_of(model, n, index, attr_name):
    """An int list given as input `index` or as attribute `attr_name` of node `n` in `model`."""
    if index < len(n.input) and n.input[index]:
        return [int(v) for v in initializer(model, n.input[index]).reshape(-1)]
    return list(attribute(n, attr_name))


# ---- Concat ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("branches", [2, 3])
def test_concat_of_convs(branches):
    r"""x -> ConvA(8) -+
         x -> ConvB(6) -+-> Concat(axis=1) -> Relu -> Conv(4) -> y
        (x -> ConvC(4) -+)

    Each branch stays its own group; the consumer's weight is sliced at the right offsets."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    sizes = [8, 6, 4][:branches]
    names = ["convA", "convB", "convC"][:branches]
    parts = [b.op("Relu", [b.conv(x, 3, c, name=n)]) for c, n in zip(sizes, names)]
    y = b.op("Concat", parts, name="cat", axis=1)
    b.output(b.conv(y, sum(sizes), 4, name="head"))
    result = prune(b.build())
    assert len(prunable(result)) == branches
    for c, n in zip(sizes, names):
        g = out_group(result, n)
        assert g.prunable and g.channels == c and g.kept == c // 2 and g.members == [n, "head"]
    assert initializer(result.model, "head.w").shape == (4, sum(sizes) // 2, 3, 3)


def test_concat_with_a_graph_input_blocks_only_that_segment():
    r"""x -> Conv(8) -> Relu -+-> Concat(axis=1) -> Conv(4) -> y
    x ---------------------/        (x's 3 channels are a blocked segment; conv's 8 are pruned)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    b.output(b.conv(b.op("Concat", [h, x], name="cat", axis=1), 11, 4, name="head"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "head"]
    (seg,) = [g for g in groups_of(result) if g.channels == 3]
    assert seg.members == ["head"]
    assert_blocked_by(seg, "Concat 'cat'", "input 'x' has channels that cannot be pruned: they come from a graph input")
    assert initializer(result.model, "head.w").shape == (4, 4 + 3, 3, 3)


def test_concat_with_a_constant():
    r"""x -> Conv(8) -> Relu -+-> Concat(axis=1) -> Conv(4) -> y
    c[1,2,6,6] -------------/       (a constant segment cannot shrink)"""
    b = Builder()
    x = b.input("x", [1, 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    b.output(b.conv(b.op("Concat", [b.weight([1, 2, 6, 6], "c"), h], name="cat", axis=1), 10, 4, name="head"))
    result = prune(b.build())
    assert out_group(result, "conv1").kept == 4
    (seg,) = [g for g in groups_of(result) if g.channels == 2]
    assert_blocked_by(seg, "Concat 'cat'", "input 'c' has channels that cannot be pruned: they come from a constant")


def test_concat_on_a_spatial_axis_ties_the_inputs():
    r"""x -> ConvA(8) -+
    x -> ConvB(8) -+-> Concat(axis=2) -> Conv(4) -> y      (same channels on both: one group)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    a, c = b.conv(x, 3, 8, name="convA"), b.conv(x, 3, 8, k=1, name="convB")
    b.output(b.conv(b.op("Concat", [a, c], name="cat", axis=2), 8, 4, name="head"))
    result = prune(b.build())
    g = out_group(result, "convA")
    assert g == out_group(result, "convB")
    assert g.prunable and g.kept == 4 and set(g.members) == {"convA", "convB", "head"}


def test_concat_on_a_spatial_axis_with_graph_input_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> Concat(axis=2) -> Conv(4) -> y
    z[N,8,2,6] ------------------------/"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    z = b.input("z", ["N", 8, 2, 6])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    b.output(b.conv(b.op("Concat", [h, z], name="cat", axis=2), 8, 4, name="head"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Concat 'cat'",
                      "input 'z' has channels that cannot be pruned: they come from a graph input")


def test_concat_then_split_back():
    r"""x -> ConvA(8) -+-> Concat -> Relu -> Split([8,6]) -+-> ConvC(4) -> y1
    x -> ConvB(6) -+                                  \-> ConvD(4) -> y2"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    a, c = b.conv(x, 3, 8, name="convA"), b.conv(x, 3, 6, name="convB")
    y = b.op("Relu", [b.op("Concat", [a, c], axis=1)])
    p, q = b.op("Split", [y, b.ints([8, 6], "split")], outputs=2, name="split", axis=1)
    b.output(b.conv(p, 8, 4, name="convC"), b.conv(q, 6, 4, name="convD"))
    result = prune(b.build())
    assert out_group(result, "convA").members == ["convA", "convC"]
    assert out_group(result, "convB").members == ["convB", "convD"]
    assert ints_of(result.model, node(result.model, "Split"), 1, "split") == [4, 3]


# ---- Split -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["input(opset13)", "attribute(opset11)"])
def test_split_sizes(style):
    r"""x -> Conv(12) -> Relu -> Split(axis=1, [4, 8]) -+-> ConvA(4) -> y1
                                                     \-> ConvB(4) -> y2

    The producer's space is cut in two groups; the split sizes are rewritten."""
    opset = 13 if style.startswith("input") else 11
    b = Builder(opset)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 12, name="conv1")])
    if opset >= 13:
        p, q = b.op("Split", [h, b.ints([4, 8], "split")], outputs=2, name="split", axis=1)
    else:
        p, q = b.op("Split", [h], outputs=2, name="split", axis=1, split=[4, 8])
    b.output(b.conv(p, 4, 4, name="convA"), b.conv(q, 8, 4, name="convB"))
    result = prune(b.build())
    first, second = out_groups(result, "conv1")
    assert (first.channels, first.kept, first.members) == (4, 2, ["conv1", "convA"])
    assert (second.channels, second.kept, second.members) == (8, 4, ["conv1", "convB"])
    assert first.prunable and second.prunable
    assert ints_of(result.model, node(result.model, "Split"), 1, "split") == [2, 4]
    assert initializer(result.model, "conv1.w").shape == (6, 3, 3, 3)


@pytest.mark.parametrize("outputs, expected", [(2, [3, 3]), (3, [2, 2, 1])])
def test_split_num_outputs_opset18(outputs, expected):
    r"""opset 18: x -> Conv(12 or 8) -> Split(axis=1, num_outputs=n) -> Conv(4) each -> y_i

    12 channels in 2 parts of 6; 8 channels in 3 parts 3, 3, 2 (the last is smaller). After pruning the parts
    differ from what num_outputs would give, so the rewriter writes explicit sizes."""
    b = Builder(18)
    c = 12 if outputs == 2 else 8
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, c, name="conv1")])
    parts = b.op("Split", [h], outputs=outputs, name="split", axis=1, num_outputs=outputs)
    chunk = -(-c // outputs)
    sizes = [min(chunk, c - i * chunk) for i in range(outputs)]
    b.output(*[b.conv(p, s, 4, name=f"conv_{i}") for i, (p, s) in enumerate(zip(parts, sizes))])
    result = prune(b.build())
    groups = out_groups(result, "conv1")
    assert [g.channels for g in groups] == sizes
    assert all(g.prunable for g in groups)
    split = node(result.model, "Split")
    assert ints_of(result.model, split, 1, "split") == expected
    assert attribute(split, "num_outputs") is None


def test_split_equal_parts_opset11_without_sizes():
    r"""opset 11: x -> Conv(8) -> Split(axis=1) -> (ConvA(4), ConvB(4))      (equal halves of 4)"""
    b = Builder(11)
    x = b.input("x", ["N", 3, 6, 6])
    p, q = b.op("Split", [b.conv(x, 3, 8, name="conv1")], outputs=2, name="split", axis=1)
    b.output(b.conv(p, 4, 4, name="convA"), b.conv(q, 4, 4, name="convB"))
    result = prune(b.build())
    assert [g.channels for g in out_groups(result, "conv1")] == [4, 4]
    assert [g.kept for g in out_groups(result, "conv1")] == [2, 2]


def test_split_on_another_axis_passes_channels():
    r"""x -> Conv(8) -> Split(axis=2, [3,3]) -+-> Add -> Conv(4) -> y
                                             \--/"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    p, q = b.op("Split", [b.conv(x, 3, 8, name="conv1"), b.ints([3, 3], "split")], outputs=2, axis=2)
    b.output(b.conv(b.op("Add", [p, q]), 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_split_through_a_grouped_conv_block_is_blocked():
    r"""x -> Conv(8) -> Conv(8, group=2) -> Relu -> Split(axis=1, [3,5]) -> (ConvA, ConvB)

    The grouped conv pruned whole blocks of 4 channels: a cut at 3 falls inside a block."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Relu", [b.conv(h, 8, 8, group=2, name="gconv")])
    p, q = b.op("Split", [h, b.ints([3, 5], "split")], outputs=2, name="split", axis=1)
    b.output(b.conv(p, 3, 4, name="convA"), b.conv(q, 5, 4, name="convB"))
    report = onnxprune.analyze(b.build())
    (g,) = [g for g in report.groups if "gconv" in g.members and "conv1" in g.members]
    assert_blocked_by(g, "Split 'split'", "inside a block")


@pytest.mark.parametrize("sizes", [[64, 64], [60, 68]])
def test_split_after_flatten(sizes):
    r"""x[N,3,4,4] -> Conv(8) -> Relu -> Flatten [N,128] -> Split(axis=1, sizes) -+-> Gemm(4) -> yA
                                                                               \-> Gemm(4) -> yB

    Each channel owns 16 features: a cut at 64 splits the channels 4 + 4, a cut at 60 falls inside channel 3."""
    b = Builder(13)
    x = b.input("x", ["N", 3, 4, 4])
    f = b.op("Flatten", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")])])
    p, q = b.op("Split", [f, b.ints(sizes)], outputs=2, name="split", axis=1)
    b.output(b.gemm(p, sizes[0], 4, name="fa"), b.gemm(q, sizes[1], 4, name="fb"))
    if sizes == [60, 68]:
        report = onnxprune.analyze(b.build())
        (g,) = [g for g in report.groups if "conv1" in g.members]
        assert_blocked_by(g, "Split 'split'", "inside a block")
        return
    result = prune(b.build())
    first, second = out_groups(result, "conv1")
    assert (first.members, first.channels, first.kept) == (["conv1", "fa"], 4, 2)
    assert (second.members, second.channels, second.kept) == (["conv1", "fb"], 4, 2)
    assert ints_of(result.model, node(result.model, "Split"), 1, "split") == [32, 32]


# ---- Slice -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "starts, ends, expected",
    [([2], [10], [1, 5]), ([-10], [-2], [1, 5]), ([0], [6], [0, 3]), ([6], [2**63 - 1], [3, 6])],
    ids=["2:10", "-10:-2", "0:6", "6:end"],
)
def test_slice_on_the_channel_axis(starts, ends, expected):
    r"""x -> Conv(12) -> Relu -> Slice(axes [1], starts, ends) -> Conv(4) -> y

    The producer's space is cut at the bounds; the parts outside the slice are read by nobody and pruned too;
    the bounds are rewritten (negative ones become the new positive positions)."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 12, name="conv1")])
    y = b.op("Slice", [h, b.ints(starts, "starts"), b.ints(ends, "ends"), b.ints([1], "axes")], name="slice")
    lo, hi = [max(0, min(12, v + 12 if v < 0 else v)) for v in (starts[0], ends[0])]
    b.output(b.conv(y, hi - lo, 4, name="conv2"))
    result = prune(b.build())
    read = [g for g in out_groups(result, "conv1") if "conv2" in g.members]
    assert len(read) == 1 and read[0].channels == hi - lo and read[0].kept == (hi - lo) // 2
    assert all(g.prunable for g in out_groups(result, "conv1"))
    s = node(result.model, "Slice")
    new_starts, new_ends = ints_of(result.model, s, 1, ""), ints_of(result.model, s, 2, "")
    assert [new_starts[0], new_ends[0]] == expected


def test_slice_opset9_attributes():
    r"""opset 9: x -> Conv(12) -> Relu -> Slice(starts=[4], ends=[12], axes=[1]) -> Conv(4) -> y"""
    b = Builder(9)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 12, name="conv1")])
    y = b.op("Slice", [h], name="slice", starts=[4], ends=[12], axes=[1])
    b.output(b.conv(y, 8, 4, name="conv2"))
    result = prune(b.build())
    assert [g.channels for g in out_groups(result, "conv1")] == [4, 8]
    s = node(result.model, "Slice")
    assert attribute(s, "starts") == [2] and attribute(s, "ends") == [6]


def test_slice_on_spatial_axes_passes_channels():
    r"""x -> Conv(8) -> Slice(axes [2,3], 1:5) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    y = b.op("Slice", [b.conv(x, 3, 8, name="conv1"), b.ints([1, 1]), b.ints([5, 5]), b.ints([2, 3])])
    b.output(b.conv(y, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_slice_with_step_on_channels_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> Slice(axes [1], 0:8:2) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    y = b.op("Slice", [h, b.ints([0]), b.ints([8]), b.ints([1]), b.ints([2])], name="slice")
    b.output(b.conv(y, 4, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Slice 'slice'", "step other than 1")


# ---- Flatten / Reshape ---------------------------------------------------------------------------------
def test_flatten_channel_axis_last():
    r"""x -> Conv(8) -> Relu -> Flatten(axis=1) [N, 8*4*4] -> Gemm(10) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    y = b.op("Flatten", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")])], axis=1)
    b.output(b.gemm(y, 128, 10, name="fc"))
    result = prune(b.build())
    assert out_group(result, "conv1").members == ["conv1", "fc"]
    assert initializer(result.model, "fc.w").shape == (64, 10)


def test_flatten_merging_channels_with_batch_is_blocked():
    r"""x[2,3,4,4] -> Conv(8) -> Relu -> Conv(8) -> Flatten(axis=2) [2*8, 16] -> Gemm(10) -> y"""
    b = Builder()
    x = b.input("x", [2, 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    b.output(b.gemm(b.op("Flatten", [h], name="flat", axis=2), 16, 10, name="fc"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Flatten 'flat'", "axes before it")


@pytest.mark.parametrize("axis", [1, -3])
def test_flatten_negative_axis(axis):
    r"""x -> Conv(8) -> Relu -> Flatten(axis=-3, the same as 1 on rank 4) -> Gemm(10) -> y

    (Bug fixed: a negative axis was taken modulo rank+1, so -3 meant 2 and the group was blocked.)"""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    y = b.op("Flatten", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")])], name="flat", axis=axis)
    b.output(b.gemm(y, 128, 10, name="fc"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "fc"]


def test_flatten_minus_one_with_channels_first():
    r"""x[1,3,4,4] -> Conv(8) -> Relu -> Transpose(1,0,2,3) [8,1,4,4] -> Flatten(axis=-1) [32,4] -> Gemm(transA) -> y

    Channel i owns rows 4i..4i+3 of the flattened matrix (Flatten(-1) keeps the last axis apart)."""
    b = Builder()
    x = b.input("x", [1, 3, 4, 4])
    h = b.op("Transpose", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")])], perm=[1, 0, 2, 3])
    f = b.op("Flatten", [h], name="flat", axis=-1)
    b.output(b.gemm(f, 32, 10, name="fc", transA=1))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "fc"]
    assert initializer(result.model, "fc.w").shape == (16, 10)


@pytest.mark.parametrize("target", [[0, -1], [1, 128], [0, 128]], ids=["0,-1", "1,128", "0,128"])
def test_reshape_to_n_chw(target):
    r"""x[1,3,4,4] -> Conv(8) -> Relu -> Reshape([N, C*H*W]) -> MatMul([128,10]) -> y"""
    b = Builder()
    x = b.input("x", [1, 3, 4, 4])
    y = b.op("Reshape", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), b.ints(target, "target")], name="reshape")
    b.output(b.matmul(y, 128, 10, name="fc", bias=False))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "fc"]
    assert ints_of(result.model, node(result.model, "Reshape"), 1, "") == [64 if v == 128 else v for v in target]


@pytest.mark.parametrize("target", [[0, 8, -1], [0, 0, 16], [0, 8, 16]], ids=["0,8,-1", "0,0,16", "0,8,16"])
def test_reshape_to_n_c_hw(target):
    r"""x -> Conv(8) -> Relu -> Reshape([N, C, H*W]) -> Conv1d(4) -> y       (the channel axis stays)"""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    y = b.op("Reshape", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), b.ints(target, "target")], name="reshape")
    b.output(b.conv(y, 8, 4, dims=1, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]
    assert ints_of(result.model, node(result.model, "Reshape"), 1, "") == [4 if v == 8 else v for v in target]


def test_reshape_splitting_channels_into_heads():
    r"""x[N,T,16] -> MatMul(8) -> Reshape([0,0,2,4]) -> Relu -> Reshape([0,0,8]) -> MatMul(4) -> y

    The 8 features become 2 heads of 4: whole heads are pruned."""
    b = Builder()
    x = b.input("x", ["N", 5, 16])
    h = b.op("Reshape", [b.matmul(x, 16, 8, name="fc1"), b.ints([0, 0, 2, 4], "heads")], name="split_heads")
    h = b.op("Reshape", [b.op("Relu", [h]), b.ints([0, 0, 8], "merge")], name="merge_heads")
    b.output(b.matmul(h, 8, 4, name="fc2"))
    result = prune(b.build())
    g = out_group(result, "fc1")
    assert g.prunable and g.channels == 2 and g.kept == 1 and g.unit == 4
    assert initializer(result.model, "fc2.w").shape == (4, 4)
    assert [int(v) for v in initializer(result.model, node_named(result.model, "merge_heads").input[1])] == [0, 0, 4]


def test_attention_heads():
    r"""x[N,T,16] -> MatMul(8) = q, k, v -> Reshape([0,0,2,4]) -> Transpose -> heads
    softmax(q @ k^T / 2) @ v -> Transpose -> Reshape([0,0,8]) -> MatMul(16) -> y

    q, k and v are tied head by head (the head dim is contracted inside a head only): whole heads go."""
    b = Builder()
    x = b.input("x", ["N", 5, 16])

    def heads(t, perm):
        return b.op("Transpose", [b.op("Reshape", [t, b.ints([0, 0, 2, 4])])], perm=perm)

    q = heads(b.matmul(x, 16, 8, name="q"), [0, 2, 1, 3])
    k = heads(b.matmul(x, 16, 8, name="k"), [0, 2, 3, 1])
    v = heads(b.matmul(x, 16, 8, name="v"), [0, 2, 1, 3])
    s = b.op("Softmax", [b.op("Div", [b.op("MatMul", [q, k], name="qk"), b.scalar(2.0)])], axis=-1)
    o = b.op("MatMul", [s, v], name="sv")
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]), b.ints([0, 0, 8], "merge_shape")], name="merge")
    b.output(b.matmul(o, 8, 16, name="proj"))
    result = prune(b.build())
    g = out_group(result, "q")
    assert g == out_group(result, "k") == out_group(result, "v")
    assert g.prunable and g.channels == 2 and g.kept == 1 and g.unit == 4
    assert set(g.members) == {"q", "q.add", "k", "k.add", "v", "v.add", "proj"}
    assert initializer(result.model, "q.w").shape == (16, 4)
    assert initializer(result.model, "proj.w").shape == (4, 16)


def node_named(model, name):
    (n,) = [n for n in model.graph.node if n.name == name]
    return n


@pytest.mark.parametrize("exclude", [(), ("convB",)], ids=["both-pruned", "one-pruned"])
def test_reshape_targets_sharing_one_concat_get_their_own_copy(exclude):
    r"""x -> ConvA(8) -> Relu -> Reshape(t) -> Conv1d(4) -> yA
    x -> ConvB(8) -> Relu -> Reshape(t) -> Conv1d(4) -> yB
    t = Concat(Shape(z)[0:1], [8], [16])       (one computed target read by both Reshapes)

    The 8 in t must become ConvA's and ConvB's kept counts, which may differ: a Reshape whose entry changes
    while another node still reads t gets its own copy of the Concat (dynamo exports share one target
    between all the layers of a transformer). (Was blocked before; earlier still, the rule rewrote the shared
    Concat for each Reshape, leaving a scalar piece that failed the checker.)"""
    b = Builder()
    _, z = shared_reshape_target(b)
    b.output(b.gemm(b.op("Relu", [b.gemm(z, 2, 6, name="fc1")]), 6, 3, name="fc2"))
    result = prune(b.build(), exclude=exclude)
    a, bb = out_group(result, "convA"), out_group(result, "convB")
    assert a.prunable and bb.prunable and a.kept == 4 and bb.kept == (8 if exclude else 4)
    concats = [n for n in result.model.graph.node if n.op_type == "Concat"]
    assert len(concats) == 2 and {c.name for c in concats} == {"target", "target__for_reshapeA"}
    targets = {n.name: n.input[1] for n in result.model.graph.node if n.op_type == "Reshape"}
    assert targets["reshapeA"] != targets["reshapeB"]


def test_reshape_target_concat_read_by_one_reshape_is_rewritten():
    r"""x -> Conv(8) -> Relu -> Reshape(Concat(Shape(z)[0:1], [8], [16])) -> Conv1d(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    z = b.input("z", ["N", 2])
    n = b.op("Slice", [b.op("Shape", [z]), b.ints([0]), b.ints([1])])
    t = b.op("Concat", [n, b.ints([8], "eight"), b.ints([16])], axis=0, name="target")
    h = b.op("Reshape", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), t], name="reshape")
    b.output(b.conv(h, 8, 4, dims=1, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4
    (concat,) = [n for n in result.model.graph.node if n.name == "target"]
    assert initializer(result.model, concat.input[1]).tolist() == [4]


def test_rewriter_set_int_entry_twice_on_one_input():
    r"""x[N,8,4,4] -> Reshape(t = [0, 8, 16]) -> y;   set entry 1 to 4, then entry 2 to 32.

    No rule does this today, but Rewriter.set_int_entry promises to edit one entry and keep the others."""
    from onnxprune.deps.context import analyze
    from onnxprune.deps.ops import default_registry
    from onnxprune.graph import Graph
    from onnxprune.rewrite import Rewriter

    b = Builder()
    x = b.input("x", ["N", 8, 4, 4])
    b.output(b.op("Reshape", [x, b.ints([0, 8, 16], "t")], name="reshape"))
    model = b.build()
    graph = Graph(model)
    rw = Rewriter(analyze(graph, default_registry()), {})
    reshape = graph.node_by_name("reshape")
    rw.set_int_entry(reshape, 1, 1, 4)
    rw.set_int_entry(reshape, 1, 2, 32)
    assert initializer(rw.graph.model, rw.node(reshape).input[1]).tolist() == [0, 4, 32]
    assert initializer(model, reshape.input[1]).tolist() == [0, 8, 16]  # the analyzed model is not changed


def test_reshape_mixing_channels_with_batch_is_blocked():
    r"""x[2,3,4,4] -> Conv(8) -> Relu -> Conv(8) -> Reshape([-1, 4, 4, 4]) [4,4,4,4] -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", [2, 3, 4, 4])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    h = b.op("Reshape", [h, b.ints([-1, 4, 4, 4], "t")], name="reshape")
    b.output(b.conv(h, 4, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Reshape 'reshape'",
                      "it reshapes the channel axis in a way onnxprune cannot follow")


# ---- Squeeze / Unsqueeze / Transpose / Gather ------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    r"""x -> Conv(8) -> GAP [N,8,1,1] -> Squeeze([2,3]) [N,8] -> Gemm(6) -> Relu -> Unsqueeze([2,3]) -> Conv1x1(4) -> y

    opset 11 gives axes as attributes, 13 as inputs."""
    b = Builder(opset)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("GlobalAveragePool", [b.conv(x, 3, 8, name="conv1")])
    if opset >= 13:
        h = b.op("Squeeze", [h, b.ints([2, 3], "sq_axes")], name="squeeze")
    else:
        h = b.op("Squeeze", [h], name="squeeze", axes=[2, 3])
    h = b.op("Relu", [b.gemm(h, 8, 6, name="fc")])
    if opset >= 13:
        h = b.op("Unsqueeze", [h, b.ints([-1, -2], "unsq_axes")], name="unsqueeze")
    else:
        h = b.op("Unsqueeze", [h], name="unsqueeze", axes=[2, 3])
    b.output(b.conv(h, 6, 4, k=1, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").members == ["conv1", "fc"]
    assert out_group(result, "fc").members == ["fc", "conv2"]
    assert out_group(result, "conv1").kept == 4 and out_group(result, "fc").kept == 3


def test_squeeze_without_axes():
    r"""x[1,3,6,6] -> Conv(8) -> GAP -> Squeeze() [8] -> Unsqueeze([0]) -> MatMul([8,4]) -> y"""
    b = Builder()
    x = b.input("x", [1, 3, 6, 6])
    h = b.op("Squeeze", [b.op("GlobalAveragePool", [b.conv(x, 3, 8, name="conv1")])], name="squeeze")
    h = b.op("Unsqueeze", [h, b.ints([0])])
    b.output(b.matmul(h, 8, 4, name="fc"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "fc"]


def test_transpose_to_channels_last():
    r"""x -> Conv(8) -> Relu -> Transpose(0,2,3,1) [N,H,W,8] -> MatMul([8,6]) -> Relu -> Transpose(0,3,1,2) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Transpose", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")])], perm=[0, 2, 3, 1])
    h = b.op("Relu", [b.matmul(h, 8, 6, name="fc")])
    b.output(b.conv(b.op("Transpose", [h], perm=[0, 3, 1, 2]), 6, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").members == ["conv1", "fc"]
    assert out_group(result, "fc").members == ["fc", "fc.add", "conv2"]
    assert out_group(result, "conv1").kept == 4 and out_group(result, "fc").kept == 3


def test_transpose_without_perm_reverses():
    r"""x -> Conv(8) -> Transpose() [W,H,8,N] -> Transpose() -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Transpose", [b.op("Transpose", [b.conv(x, 3, 8, name="conv1")])])
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


def test_gather_on_a_spatial_axis_passes():
    r"""x -> Conv(8) -> Gather(axis=2, [0, 2, 4]) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Gather", [b.conv(x, 3, 8, name="conv1"), b.ints([0, 2, 4])], axis=2)
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


def test_gather_on_the_channel_axis_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> Gather(axis=1, [0, 3, 5]) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    h = b.op("Gather", [h, b.ints([0, 3, 5])], name="gather", axis=1)
    b.output(b.conv(h, 3, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Gather 'gather'", "along the channel axis")


# ---- Resize / Upsample / Pad -----------------------------------------------------------------------------
def test_resize_with_scales():
    r"""opset 13: x -> Conv(8) -> Resize(scales [1,1,2,2]) -> Conv(4) -> y"""
    b = Builder(13)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Resize", [b.conv(x, 3, 8, name="conv1"), "", b.const(np.array([1, 1, 2, 2], np.float32), "scales",
                                                                   dtype=np.float32)], mode="nearest")
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_resize_with_scales_opset11_roi():
    r"""opset 11: x -> Conv(8) -> Resize(roi [], scales [1,1,2,2], linear) -> Conv(4) -> y"""
    b = Builder(11)
    x = b.input("x", ["N", 3, 6, 6])
    roi = b.const(np.zeros(0, np.float32), "roi", dtype=np.float32)
    scales = b.const(np.array([1, 1, 2, 2], np.float32), "scales", dtype=np.float32)
    h = b.op("Resize", [b.conv(x, 3, 8, name="conv1"), roi, scales], mode="linear")
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


def test_resize_opset10_scales_input():
    r"""opset 10: x -> Conv(8) -> Resize(scales [1,1,2,2] as input 1) -> Conv(4) -> y"""
    b = Builder(10)
    x = b.input("x", ["N", 3, 6, 6])
    scales = b.const(np.array([1, 1, 2, 2], np.float32), "scales", dtype=np.float32)
    h = b.op("Resize", [b.conv(x, 3, 8, name="conv1"), scales], mode="nearest")
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


def test_resize_with_sizes_rewrites_sizes():
    r"""opset 13: x[1,3,6,6] -> Conv(8) -> Resize(sizes [1,8,12,12]) -> Conv(4) -> y      (sizes -> [1,4,12,12])"""
    b = Builder(13)
    x = b.input("x", [1, 3, 6, 6])
    h = b.op("Resize", [b.conv(x, 3, 8, name="conv1"), "", "", b.ints([1, 8, 12, 12], "sizes")], name="resize",
             mode="nearest")
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4
    assert ints_of(result.model, node(result.model, "Resize"), 3, "") == [1, 4, 12, 12]


def test_resize_scaling_the_channel_axis_is_blocked():
    r"""opset 13: x -> Conv(8) -> Relu -> Conv(8) -> Resize(scales [1,2,2,2]) -> Conv(4) -> y"""
    b = Builder(13)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    scales = b.const(np.array([1, 2, 2, 2], np.float32), "scales", dtype=np.float32)
    h = b.op("Resize", [h, "", scales], name="resize", mode="nearest")
    b.output(b.conv(h, 16, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Resize 'resize'", "scales the channel axis")


def _size_like(b, data, like, dynamo: bool) -> str:
    """F.interpolate(data, size=like.shape[-2:]) sizes: N and C of `data` read at run time, H and W of `like`.
    TorchScript: Concat(Slice(Shape(data), 0, 2), Cast(Concat(Unsqueeze(Gather(Shape(like), 2)), ...)));
    dynamo: Concat(Shape(data, 0, 2), Shape(like, 2, 4))."""
    if dynamo:
        return b.op("Concat", [b.op("Shape", [data], start=0, end=2), b.op("Shape", [like], start=2, end=4)], axis=0)
    head = b.op("Slice", [b.op("Shape", [data]), b.ints([0]), b.ints([2]), b.ints([0])])
    hw = [b.op("Unsqueeze", [b.op("Gather", [b.op("Shape", [like]), b.const(np.int64(a))], axis=0), b.ints([0])])
          for a in (2, 3)]
    return b.op("Concat", [head, b.op("Cast", [b.op("Concat", hw, axis=0)], to=7)], axis=0)


@pytest.mark.parametrize("dynamo", [False, True])
def test_resize_to_the_size_of_another_tensor_ties_nothing_and_passes(dynamo):
    r"""An FPN top-down step, sizes read at run time:
    x[N,3,H,W] -> Conv(8) -> Relu = a -> Conv(8, stride 2) -> Relu -> Conv(6) = top
    a -> Conv(6) = lateral;  lateral + Resize(top, sizes = [N, C of top, H and W of a]) -> Conv(4) -> y

    The channel entry of the sizes is top's own count at run time: nothing to rewrite."""
    b = Builder(17)
    x = b.input("x", ["N", 3, "H", "W"])
    a = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    top = b.conv(b.op("Relu", [b.conv(a, 8, 8, name="down", strides=[2, 2])]), 8, 6, 1, name="top")
    up = b.op("Resize", [top, "", "", _size_like(b, top, a, dynamo)], name="resize", mode="nearest")
    h = b.op("Add", [b.conv(a, 8, 6, 1, name="lateral"), up])
    b.output(b.conv(h, 6, 4, name="head"))
    for size in ([2, 3, 10, 14], [1, 3, 9, 7]):
        result = prune(b.build(), shapes={"x": size})
        g = out_group(result, "top")
        assert g.prunable and g.kept == 3 and sorted(g.members) == ["head", "lateral", "top"]
        assert out_group(result, "down").prunable


def test_resize_sizes_setting_the_channel_axis_to_another_count_are_blocked():
    r"""x[1,3,6,6] -> Conv(8) -> Relu -> Conv(8) = h -> Resize(sizes [N, N + 7, 12, 12]) -> Conv(4) -> y

    The channel entry is 8 here, but computed: it would not follow the pruned count."""
    b = Builder(17)
    x = b.input("x", [1, 3, 6, 6])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    n = b.op("Shape", [h], start=0, end=1)
    sizes = b.op("Concat", [n, b.op("Add", [n, b.ints([7])]), b.ints([12, 12])], axis=0)
    h = b.op("Resize", [h, "", "", sizes], name="resize", mode="nearest")
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Resize 'resize'", "sets the channel axis to a computed value")


def test_resize_with_computed_scales_passes_when_the_channel_scale_is_one():
    r"""x[N,3,H,W] -> Conv(8) -> Resize(scales Concat([1, 1], Cast(Shape(x)[2:4]) / Shape(x)[2:4] * 2)) -> Conv(4)
    The spatial scales are computed (2 for every size); the channel scale is the constant 1."""
    b = Builder(17)
    x = b.input("x", ["N", 3, "H", "W"])
    hw = b.op("Cast", [b.op("Shape", [x], start=2, end=4)], to=1)
    spatial = b.op("Mul", [b.op("Div", [hw, hw]), b.const(np.float32(2))])
    scales = b.op("Concat", [b.const(np.ones(2, np.float32), dtype=np.float32), spatial], axis=0)
    h = b.op("Resize", [b.conv(x, 3, 8, name="conv1"), "", scales], name="resize", mode="nearest")
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build(), shapes={"x": [1, 3, 5, 6]})
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4


def test_upsample_opset9():
    r"""opset 9: x -> Conv(8) -> Relu -> Upsample(scales [1,1,2,2]) -> Conv(4) -> y"""
    b = Builder(9)
    x = b.input("x", ["N", 3, 6, 6])
    scales = b.const(np.array([1, 1, 2, 2], np.float32), "scales", dtype=np.float32)
    h = b.op("Upsample", [b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), scales], mode="nearest")
    b.output(b.conv(h, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


@pytest.mark.parametrize("opset", [10, 13, 18])
def test_pad_on_spatial_axes(opset):
    r"""x -> Conv(8) -> Relu -> Pad(H, W by 1) -> Conv(4, no pads) -> y

    opset 10: pads attribute; 13: pads input; 18: pads input with axes [2, 3]."""
    b = Builder(opset)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    if opset < 11:
        h = b.op("Pad", [h], pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="constant")
    elif opset < 18:
        h = b.op("Pad", [h, b.ints([0, 0, 1, 1, 0, 0, 1, 1], "pads")], mode="reflect")
    else:
        h = b.op("Pad", [h, b.ints([1, 1, 1, 1], "pads"), "", b.ints([2, 3], "axes")])
    b.output(b.conv(h, 8, 4, name="conv2", pads=[0, 0, 0, 0]))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


@pytest.mark.parametrize("opset", [13, 18])
def test_pad_on_the_channel_axis_is_blocked(opset):
    r"""x -> Conv(8) -> Relu -> Conv(8) -> Pad(C by 1 before, 1 after) [N,10,H,W] -> Conv(4) -> y"""
    b = Builder(opset)
    x = b.input("x", ["N", 3, 6, 6])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    if opset < 18:
        h = b.op("Pad", [h, b.ints([0, 1, 0, 0, 0, 1, 0, 0], "pads")], name="pad")
    else:
        h = b.op("Pad", [h, b.ints([1, 1], "pads"), "", b.ints([1], "axes")], name="pad")
    b.output(b.conv(h, 10, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Pad 'pad'", "pads the channel axis")


def _same_pad_amount(b, x, axis: int, k: int, s: int) -> str:
    """max((ceil(size / s) - 1) * s + k - size, 0) for dimension `axis` of x, read at run time (timm's "same")."""
    size = b.op("Gather", [b.op("Shape", [x]), b.const(np.int64(axis))], axis=0)
    steps = b.op("Cast", [b.op("Ceil", [b.op("Div", [b.op("Cast", [size], to=1), b.const(np.float32(s))])])], to=7)
    need = b.op("Sub", [b.op("Add", [b.op("Mul", [b.op("Sub", [steps, b.const(np.int64(1))]), b.const(np.int64(s))]),
                                     b.const(np.int64(k))]), size])
    return b.op("Max", [need, b.const(np.int64(0))])


def _torchscript_same_pads(b, x) -> str:
    """F.pad(x, [w // 2, w - w // 2, h // 2, h - h // 2]) as TorchScript exports it: the 4 computed entries,
    ConstantOfShape zeros for the other axes, then pairs reversed into ONNX order and cast."""
    entries = []
    for axis in (3, 2):
        amount = _same_pad_amount(b, x, axis, 3, 2)
        half = b.op("Div", [amount, b.const(np.int64(2))])
        entries += [half, b.op("Sub", [amount, half])]
    listed = b.op("Concat", [b.op("Unsqueeze", [e, b.ints([0])]) for e in entries], axis=0)
    length = b.op("Gather", [b.op("Shape", [listed]), b.const(np.int64(0))], axis=0)
    zeros = b.op("ConstantOfShape", [b.op("Unsqueeze", [b.op("Sub", [b.const(np.int64(8)), length]), b.ints([0])])],
                 value=onnx.numpy_helper.from_array(np.zeros(1, np.int64)))
    pairs = b.op("Reshape", [b.op("Concat", [listed, zeros], axis=0), b.ints([-1, 2])])
    pairs = b.op("Slice", [pairs, b.ints([-1]), b.ints([-(2**63) + 1]), b.ints([0]), b.ints([-1])])
    flat = b.op("Reshape", [b.op("Transpose", [pairs], perm=[1, 0]), b.ints([-1])])
    return b.op("Cast", [flat], to=7)


def _dynamo_same_pads(b, x) -> str:
    """The same pads as the dynamo exporter writes them: Concat([0], [0], h0, w0, [0], [0], h1, w1)."""
    zero, pieces = b.ints([0]), {}
    for axis in (2, 3):
        amount = _same_pad_amount(b, x, axis, 3, 2)
        half = b.op("Div", [amount, b.const(np.int64(2))])
        pieces[axis] = [b.op("Reshape", [v, b.ints([1])]) for v in (half, b.op("Sub", [amount, half]))]
    return b.op("Concat", [zero, zero, pieces[2][0], pieces[3][0], zero, zero, pieces[2][1], pieces[3][1]], axis=0)


@pytest.mark.parametrize("exporter", [_torchscript_same_pads, _dynamo_same_pads])
@pytest.mark.parametrize("size", [[2, 3, 9, 12], [1, 3, 8, 7]])
def test_pad_computed_from_the_input_size_passes_channels(exporter, size):
    r"""x[N,3,H,W] -> Conv(8) -> Relu -> Pad(pads computed from H, W: "same" padding for a 3x3 stride-2 conv)
    -> Conv(8, 3x3, stride 2, no pads) -> Relu -> Conv(4) -> y

    The entries for H and W depend on the image size; those for N and C are zeros for every size."""
    b = Builder(17)
    x = b.input("x", ["N", 3, "H", "W"])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Pad", [h, exporter(b, h)], name="pad")
    h = b.op("Relu", [b.conv(h, 8, 8, name="conv2", strides=[2, 2], pads=[0, 0, 0, 0])])
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build(), shapes={"x": size})
    for conv in ("conv1", "conv2"):
        assert out_group(result, conv).prunable and out_group(result, conv).kept == 4


def test_pad_computed_on_the_channel_axis_is_blocked():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> Pad(pads Concat([0], [W % 2], [0, 0, 0], [W % 2], [0, 0])) -> Conv(4) -> y

    The channel entries depend on the input's width (zero for even widths): the group cannot be pruned."""
    b = Builder(17)
    x = b.input("x", ["N", 3, "H", "W"])
    h = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    odd = b.op("Mod", [b.op("Gather", [b.op("Shape", [x]), b.ints([3])], axis=0), b.ints([2])])
    pads = b.op("Concat", [b.ints([0]), odd, b.ints([0, 0, 0]), odd, b.ints([0, 0])], axis=0)
    h = b.op("Pad", [h, pads], name="pad")
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build(), shapes={"x": [1, 3, 6, 8]})  # an even width: the dense model runs
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Pad 'pad'", "computed at run time", "may pad the channel axis")


# ---- attention patterns: fused QKV, grouped-query attention, Expand, computed bounds -----------------------
def _attend(b, q, k, v, heads: int, head_dim: int, out: int, name: str = "proj"):
    """softmax(q @ k^T) @ v on [N, H, T, D] heads, merged back to [N, T, H * D], then MatMul(out)."""
    s = b.op("Softmax", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])], axis=-1)
    o = b.op("Transpose", [b.op("MatMul", [s, v])], perm=[0, 2, 1, 3])
    o = b.op("Reshape", [o, b.ints([0, 0, heads * head_dim])], name="merge")
    return b.matmul(o, heads * head_dim, out, name=name)


def _dims(b, x, *axes):
    """Shape(x)[axes] as 1-element vectors (the exporters' batch / sequence entries)."""
    shape = b.op("Shape", [x])
    return [b.op("Slice", [shape, b.ints([a]), b.ints([a + 1])]) for a in axes]


@pytest.mark.parametrize("unbind", ["split-squeeze", "gather", "slice-squeeze"])
def test_fused_qkv_unbound_after_reshape_prunes_whole_heads(unbind):
    r"""x[N,T,16] -> MatMul(48) -> Reshape([0,0,3,2,8]) -> Transpose(2,0,3,1,4) -> unbind(0) = q, k, v [N,2,T,8]
    softmax(q @ k^T) @ v -> Transpose -> Reshape([0,0,16]) -> MatMul(16) -> y

    timm's fused qkv: the k axis (3) is taken apart right after, so the Reshape tracks the heads, and head h
    of Q, K and V goes together (TorchScript writes unbind as Split + Squeeze, dynamo as Slice + Squeeze)."""
    b = Builder()
    x = b.input("x", ["N", "T", 16])
    qkv = b.op("Reshape", [b.matmul(x, 16, 48, name="qkv"), b.ints([0, 0, 3, 2, 8])], name="split")
    qkv = b.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])
    if unbind == "split-squeeze":
        parts = b.op("Split", [qkv, b.ints([1, 1, 1])], outputs=3, axis=0)
        q, k, v = (b.op("Squeeze", [p, b.ints([0])]) for p in parts)
    elif unbind == "gather":
        q, k, v = (b.op("Gather", [qkv, b.const(np.int64(i))], axis=0) for i in range(3))
    else:
        q, k, v = (b.op("Squeeze", [b.op("Slice", [qkv, b.ints([i]), b.ints([i + 1]), b.ints([0])]), b.ints([0])])
                   for i in range(3))
    b.output(_attend(b, q, k, v, 2, 8, 16))
    result = prune(b.build(), shapes={"x": [2, 5, 16]})
    g = out_group(result, "qkv")
    assert g.prunable and g.channels == 2 and g.kept == 1 and g.unit == 8
    assert initializer(result.model, "qkv.w").shape == (16, 24) and initializer(result.model, "proj.w").shape == (8, 16)
    assert ints_of(result.model, graph_nodes(result.model, "Reshape")[0], 1, "") == [0, 0, 3, 1, 8]


def test_fused_qkv_reduced_over_its_parts_is_blocked():
    r"""x[N,T,16] -> MatMul(48) -> Reshape([0,0,3,2,8]) -> ReduceSum(axis 2) -> Reshape([0,0,16]) -> MatMul -> y

    The k axis is not taken apart (q + k + v): its parts are tracked as a space of 3, which the ReduceSum
    sums over."""
    b = Builder()
    x = b.input("x", ["N", "T", 16])
    h = b.op("Reshape", [b.matmul(x, 16, 48, name="qkv"), b.ints([0, 0, 3, 2, 8])])
    h = b.op("ReduceSum", [h, b.ints([2])], keepdims=0, name="sum")
    b.output(b.matmul(b.op("Reshape", [h, b.ints([0, 0, 16])]), 16, 4, name="proj"))
    report = onnxprune.analyze(b.build(), shapes={"x": [2, 5, 16]})
    (g,) = [g for g in groups_of(report) if "qkv" in g.members and g.channels == 3]
    assert_blocked_by(g, "ReduceSum 'sum'", "reduces over the channel axis")


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "dynamic"])
def test_repeat_kv_ties_kv_heads_to_their_query_groups(pinned):
    r"""x[N,T,16] -> MatMul(16) -> Reshape([N,T,-1,4]) -> Transpose = q [N,4,T,4]
    x -> MatMul(8) -> Reshape([N,T,-1,4]) -> Transpose -> Unsqueeze(2) -> Expand([N,2,2,T,4]) -> Reshape([N,4,T,4])
      = k, v (HF's repeat_kv, as the dynamo exporter writes it: shapes are Concats of Shape(x) slices)
    softmax(q @ k^T) @ v -> Transpose -> Reshape([0,0,16]) -> MatMul(16) -> y

    KV head j serves query heads 2j and 2j+1: pruning it removes its whole query group."""
    b = Builder()
    x = b.input("x", ["N", "T", 16])
    n, t = _dims(b, x, 0, 1)

    def heads(h, name):
        h = b.op("Reshape", [h, b.op("Concat", [n, t, b.ints([-1]), b.ints([4])], axis=0)], name=name)
        return b.op("Transpose", [h], perm=[0, 2, 1, 3])

    expand = b.op("Concat", [n, b.ints([2]), b.ints([2]), t, b.ints([4])], axis=0, name="expand_shape")
    merge = b.op("Concat", [n, b.ints([4]), t, b.ints([4])], axis=0, name="merge_shape")

    def repeat(h, name):
        h = b.op("Expand", [b.op("Unsqueeze", [h, b.ints([2])]), expand], name=f"{name}_expand")
        return b.op("Reshape", [h, merge], name=f"{name}_merge")

    q = heads(b.matmul(x, 16, 16, name="q", bias=False), "q_heads")
    k = repeat(heads(b.matmul(x, 16, 8, name="k", bias=False), "k_heads"), "k")
    v = repeat(heads(b.matmul(x, 16, 8, name="v", bias=False), "v_heads"), "v")
    b.output(_attend(b, q, k, v, 4, 4, 16))
    result = prune(b.build(), shapes={"x": [2, 5, 16]} if pinned else None)
    g = out_group(result, "k")
    assert g == out_group(result, "q") == out_group(result, "v")
    assert g.prunable and g.channels == 2 and g.kept == 1 and g.unit == 4
    assert initializer(result.model, "q.w").shape == (16, 8) and initializer(result.model, "k.w").shape == (16, 4)
    assert initializer(result.model, "proj.w").shape == (8, 16)


@pytest.mark.parametrize("entry", ["one", "channels", "count"])
def test_expand_keeps_the_channel_axis(entry):
    r"""x[N,T,16] -> MatMul(8) -> Unsqueeze(2) [N,T,1,8] -> Expand([N, T, 3, e]) -> ReduceSum(2) -> MatMul(4) -> y

    e: 1 (broadcast), 8 (the channel count: rewritten), or Shape(h)[2] (the count, read at run time)."""
    b = Builder()
    x = b.input("x", ["N", "T", 16])
    h = b.matmul(x, 16, 8, name="fc1")
    if entry == "count":
        e = b.op("Unsqueeze", [b.op("Gather", [b.op("Shape", [h]), b.const(np.int64(2))]), b.ints([0])])
    else:
        e = b.ints([1] if entry == "one" else [8], "e")
    shape = b.op("Concat", [*_dims(b, x, 0, 1), b.ints([3]), e], axis=0)
    h = b.op("Expand", [b.op("Unsqueeze", [h, b.ints([2])]), shape], name="expand")
    h = b.op("ReduceSum", [h, b.ints([2])], keepdims=0)
    b.output(b.matmul(h, 8, 4, name="fc2"))
    result = prune(b.build(), shapes={"x": [2, 5, 16]})
    g = out_group(result, "fc1")
    assert g.prunable and g.kept == 4 and initializer(result.model, "fc2.w").shape == (4, 4)


def test_slice_with_computed_bounds_on_another_axis_passes():
    r"""x[N,T,16] -> MatMul(8) -> Reshape([0,0,2,4]) -> Transpose = q, k, v [N,2,T,4]
    q -+-> Slice(0 : D//2, axis 3) ---------+-> Concat(axis 3) = rotate_half(q)   (D = Shape(q)[3], at run time)
       +-> Slice(D//2 : end, axis 3) -> Neg -/
    softmax(rotate_half(q) @ k^T) @ v -> Transpose -> Reshape([0,0,8]) -> MatMul(16) -> y    (Llama's rotary)

    The bounds are computed, but on the head_dim axis: the heads pass."""
    b = Builder()
    x = b.input("x", ["N", "T", 16])
    h = b.op("Reshape", [b.matmul(x, 16, 24, name="qkv"), b.ints([0, 0, 3, 2, 4])])
    h = b.op("Transpose", [h], perm=[2, 0, 3, 1, 4])
    q, k, v = (b.op("Gather", [h, b.const(np.int64(i))], axis=0) for i in range(3))
    half = b.op("Div", [b.op("Gather", [b.op("Shape", [q]), b.const(np.int64(3))]), b.const(np.int64(2))])
    half = b.op("Unsqueeze", [half, b.ints([0])])
    lo = b.op("Slice", [q, b.ints([0]), half, b.ints([3])], name="lo")
    hi = b.op("Neg", [b.op("Slice", [q, half, b.ints([2**62]), b.ints([3])], name="hi")])
    b.output(_attend(b, b.op("Concat", [hi, lo], axis=3), k, v, 2, 4, 16))
    result = prune(b.build(), shapes={"x": [2, 5, 16]})
    g = out_group(result, "qkv")
    assert g.prunable and g.channels == 2 and g.kept == 1 and g.unit == 4
