r"""What blocks a group: graph outputs, custom-domain and unknown ops, subgraphs, quantized ops, LRN, Size.

Each model also holds a prunable part, so the masking oracle still runs on it; the blocked group must name
the op that blocks it and say why."""

import numpy as np
import onnx
import pytest
from onnx import helper

import onnxprune
from graphs import Builder, assert_blocked_by, groups_of, initializer, out_group, prunable
from oracle_check import assert_matches_oracle


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


def two_convs(b, x):
    """x -> Conv(8) [conv1] -> Relu -> Conv(8) [conv2]: conv1's group stays prunable, conv2's meets the op under test."""
    return b.conv(b.op("Relu", [b.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")


def test_graph_output_is_never_narrowed():
    r"""x -> Conv(8) -> Relu -+-> feat (graph output)
                             \-> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    feat = b.op("Relu", [b.conv(x, 3, 8, name="conv1")], name="feat")
    y = b.op("Relu", [b.conv(feat, 8, 6, name="conv2")])
    b.output(feat, b.conv(y, 6, 4, name="conv3"))
    result = prune(b.build())
    assert_blocked_by(out_group(result, "conv1"), "graph output 'feat'", "keeps its shape")
    assert out_group(result, "conv2").prunable and out_group(result, "conv2").kept == 3
    assert initializer(result.model, "conv1.w").shape == (8, 3, 3, 3)


def test_graph_output_after_concat_blocks_every_segment():
    r"""x -> Conv0(6) -> Relu -+-> ConvA(8) -+-> Concat -> y (graph output)
                              \-> ConvB(6) -+"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 6, name="conv0")])
    b.output(b.op("Concat", [b.conv(h, 6, 8, name="convA"), b.conv(h, 6, 6, name="convB")], axis=1, name="cat"))
    result = prune(b.build())
    assert out_group(result, "conv0").prunable and out_group(result, "conv0").kept == 3
    for name in ("convA", "convB"):
        assert_blocked_by(out_group(result, name), "graph output 'cat'", "keeps its shape")


def test_custom_domain_op():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> custom::MyRelu -> Conv(4) -> y

    MyRelu is a model-local function (so onnxruntime can run it); onnxprune does not look inside."""
    b = Builder(extra_opsets=[("custom", 1)])
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("MyRelu", [two_convs(b, x)], name="myrelu", domain="custom")
    b.output(b.conv(h, 8, 4, name="conv3"))
    model = b.build(infer_outputs=False)
    model.functions.append(helper.make_function(
        "custom", "MyRelu", ["X"], ["Y"], [helper.make_node("Relu", ["X"], ["Y"])],
        [helper.make_opsetid("", 17)]))
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    result = prune(model)
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "MyRelu 'myrelu'", "custom-domain op custom::MyRelu")


def test_if_with_subgraph_reading_an_outer_tensor():
    r"""x -> Conv(8) -> Relu -> Conv(8) = h -+-> Conv(4) -> y
                                            \-> If(c) { then: Relu(h)  else: Neg(h) } -> z

    h is read inside the subgraphs: its group is blocked."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    c = b.input("c", [], dtype=np.bool_)
    h = two_convs(b, x)
    then = helper.make_graph([helper.make_node("Relu", [h], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", [h], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, None)])
    z = b.op("If", [c], name="if", then_branch=then, else_branch=other)
    b.output(b.conv(h, 8, 4, name="conv3"))
    b.output(z, shape=["N", 8, 6, 6])
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    g = out_group(result, "conv2")
    assert_blocked_by(g, "If 'if'", "read inside a subgraph")


def test_if_with_subgraph_reading_an_outer_weight():
    r"""x -> Conv0(6) -> Relu -> Conv1(8) -> Relu -> Conv2(8)[W] -> Conv(4) -> y
    If(c) { then: Identity(W)  else: Neg(W) } -> z

    W is read inside a subgraph: neither the channels it produces nor those it reads can be sliced."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    c = b.input("c", [], dtype=np.bool_)
    h = b.op("Relu", [b.conv(x, 3, 6, name="conv0")])
    h = b.conv(b.op("Relu", [b.conv(h, 6, 8, name="conv1")]), 8, 8, name="conv2")
    then = helper.make_graph([helper.make_node("Identity", ["conv2.w"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["conv2.w"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, None)])
    z = b.op("If", [c], name="if", then_branch=then, else_branch=other)
    b.output(b.conv(h, 8, 4, name="conv3"))
    b.output(z, shape=[8, 8, 3, 3])
    result = prune(b.build())
    assert out_group(result, "conv0").prunable and out_group(result, "conv0").kept == 3
    assert_blocked_by(out_group(result, "conv2"), "conv2.w", "subgraph")
    assert_blocked_by(out_group(result, "conv1"), "conv2.w", "subgraph")
    assert initializer(result.model, "conv2.w").shape == (8, 8, 3, 3)


def test_weight_also_read_by_an_op_without_a_rule():
    r"""x -> Conv0(6) -> Relu -> Conv1(8) -> Relu -> Conv2(8)[W] -> Conv(4) -> y;   W -> ReduceSumSquare -> l2

    A weight that something else reads cannot be sliced: both spaces it holds are blocked."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 6, name="conv0")])
    h = b.conv(b.op("Relu", [b.conv(h, 6, 8, name="conv1")]), 8, 8, name="conv2")
    b.output(b.conv(h, 8, 4, name="conv3"), b.op("ReduceSumSquare", ["conv2.w"], name="l2", keepdims=0))
    result = prune(b.build())
    assert out_group(result, "conv0").prunable
    assert_blocked_by(out_group(result, "conv1"), "weight 'conv2.w' is also read by l2")
    assert_blocked_by(out_group(result, "conv2"), "weight 'conv2.w' is also read by l2")


def test_dequantize_linear_weight():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> Relu -> Conv(W = DequantizeLinear(Wq int8, scale)) -> y

    The quantized weight is not a float constant: the channels it reads are blocked."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [two_convs(b, x)])
    wq = b.const(b.rng.integers(-100, 100, (4, 8, 3, 3)).astype(np.int8), "wq")
    w = b.op("DequantizeLinear", [wq, b.const(np.float32(0.02), "w_scale")], name="dq")
    b.output(b.op("Conv", [h, w], name="qconv", pads=[1, 1, 1, 1]))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Conv 'qconv'", "comes from DequantizeLinear", "quantized ops are not pruned")


def test_quantize_dequantize_activation():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> QuantizeLinear -> DequantizeLinear -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    scale, zp = b.const(np.float32(0.05), "s"), b.const(np.uint8(128), "zp")
    q = b.op("QuantizeLinear", [two_convs(b, x), scale, zp], name="q")
    h = b.op("DequantizeLinear", [q, scale, zp], name="dq")
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "QuantizeLinear 'q'", "quantized ops are not pruned")


def test_qlinear_conv():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> QuantizeLinear -> QLinearConv(Wq) -> DequantizeLinear -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    s, zp = b.const(np.float32(0.05), "s"), b.const(np.uint8(128), "zp")
    ws, wzp = b.const(np.float32(0.01), "ws"), b.const(np.uint8(128), "wzp")
    wq = b.const(b.rng.integers(0, 255, (4, 8, 3, 3)).astype(np.uint8), "wq")
    q = b.op("QuantizeLinear", [two_convs(b, x), s, zp], name="q")
    qc = b.op("QLinearConv", [q, s, zp, wq, ws, wzp, s, zp], name="qconv", pads=[1, 1, 1, 1])
    b.output(b.op("DequantizeLinear", [qc, s, zp]))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "QuantizeLinear 'q'", "quantized")


def test_lrn():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> LRN(size 3) -> Conv(4) -> y      (LRN mixes neighbouring channels)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("LRN", [two_convs(b, x)], name="lrn", size=3)
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "LRN 'lrn'", "not supported")


def test_size():
    r"""x -> Conv(8) -> Relu -> Conv(8) -+-> Conv(4) -> y
                                        \-> Size -> Cast -> n"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = two_convs(b, x)
    b.output(b.conv(h, 8, 4, name="conv3"), b.op("Cast", [b.op("Size", [h], name="size")], to=1))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "Size 'size'", "number of elements")


@pytest.mark.parametrize("op, attrs, out_c", [
    ("DepthToSpace", {"blocksize": 2}, 2),
    ("SpaceToDepth", {"blocksize": 2}, 32),
])
def test_op_without_a_rule(op, attrs, out_c):
    r"""x -> Conv(8) -> Relu -> Conv(8) -> OP -> Conv(4) -> y      (no rule: blocked, reason names the op)"""
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    h = b.op(op, [two_convs(b, x)], name="mystery", **attrs)
    b.output(b.conv(h, out_c, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), f"{op} 'mystery'", "is not supported (no pruning rule)")


def test_unknown_op_in_a_custom_registry():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> Relu -> Conv(4) -> y, analysed with a registry that knows only Conv

    An op the registry does not know (here Relu) blocks whatever passes through it."""
    from onnxprune.deps.ops import conv
    from onnxprune.deps.rules import Registry

    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    b.output(b.conv(b.op("Relu", [two_convs(b, x)], name="relu2"), 8, 4, name="conv3"))
    report = onnxprune.analyze(b.build(), registry=Registry(conv.RULES))
    assert not report.prunable_groups
    (g,) = [g for g in report.groups if g.members == ["conv2"]]
    assert_blocked_by(g, "Relu 'relu2'", "Relu is not supported (no pruning rule)")


def test_blocked_groups_are_reported_by_analyze():
    r"""x -> Conv(8) -> Relu -> Conv(8) -> LRN -> Conv(4) -> y: analyze() lists the same groups as prune()."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    b.output(b.conv(b.op("LRN", [two_convs(b, x)], name="lrn", size=3), 8, 4, name="conv3"))
    model = b.build()
    report = onnxprune.analyze(model)
    result = prune(model)
    assert [(g.channels, g.prunable, g.members, g.reasons) for g in report.groups] == [
        (g.channels, g.prunable, g.members, g.reasons) for g in groups_of(result)
    ]
    assert len(prunable(result)) == 1
