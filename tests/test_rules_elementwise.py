"""Op rules for activations, arithmetic with constants and merges (onnxprune/deps/ops/elementwise.py)."""

import math

import pytest

from graphs import Builder, assert_blocked_by, groups_of, initializer, out_group, prunable
from oracle_check import assert_matches_oracle
from onnxprune.deps.ops.elementwise import UNARY


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


def erf_gelu(b, h):
    """x * 0.5 * (1 + Erf(x / sqrt(2))), as PyTorch exports nn.GELU before opset 20."""
    e = b.op("Erf", [b.op("Div", [h, b.scalar(math.sqrt(2.0))])])
    return b.op("Mul", [b.op("Mul", [h, b.op("Add", [e, b.scalar(1.0)])]), b.scalar(0.5)])


# name -> (opset, fn(builder, h) -> output). h is [N, 8, 6, 6].
ACTIVATIONS = {
    "Relu": (17, lambda b, h: b.op("Relu", [h])),
    "LeakyRelu": (17, lambda b, h: b.op("LeakyRelu", [h], alpha=0.1)),
    "PRelu[C,1,1]": (17, lambda b, h: b.op("PRelu", [h, b.positive([8, 1, 1], "slope")], name="prelu")),
    "PRelu[1]": (17, lambda b, h: b.op("PRelu", [h, b.positive([1], "slope")], name="prelu")),
    "Clip(min,max)": (17, lambda b, h: b.op("Clip", [h, b.scalar(-0.5), b.scalar(6.0)])),
    "Clip(min)": (17, lambda b, h: b.op("Clip", [h, b.scalar(0.0)])),
    "Clip(,max)": (17, lambda b, h: b.op("Clip", [h, "", b.scalar(0.5)])),
    "Clip-attrs(opset10)": (10, lambda b, h: b.op("Clip", [h], min=-0.5, max=6.0)),
    "Sigmoid": (17, lambda b, h: b.op("Sigmoid", [h])),
    "HardSigmoid": (17, lambda b, h: b.op("HardSigmoid", [h], alpha=0.2, beta=0.5)),
    "HardSwish": (17, lambda b, h: b.op("HardSwish", [h])),
    "Tanh": (17, lambda b, h: b.op("Tanh", [h])),
    "Elu": (17, lambda b, h: b.op("Elu", [h], alpha=0.7)),
    "Selu": (17, lambda b, h: b.op("Selu", [h])),
    "Softplus": (17, lambda b, h: b.op("Softplus", [h])),
    "Mish(opset18)": (18, lambda b, h: b.op("Mish", [h])),
    "Gelu(opset20)": (20, lambda b, h: b.op("Gelu", [h])),
    "Gelu-tanh(opset20)": (20, lambda b, h: b.op("Gelu", [h], approximate="tanh")),
    "Erf-GELU": (17, erf_gelu),
    "Dropout": (17, lambda b, h: b.op("Dropout", [h])),
    "Dropout(ratio)": (17, lambda b, h: b.op("Dropout", [h, b.scalar(0.3)])),
    "Identity": (17, lambda b, h: b.op("Identity", [h])),
    "Cast": (17, lambda b, h: b.op("Cast", [b.op("Cast", [h], to=11)], to=1)),  # fp32 -> fp64 -> fp32
    "Abs-Neg-Exp": (17, lambda b, h: b.op("Exp", [b.op("Neg", [b.op("Abs", [h])])])),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_passes_channels_through(name):
    """x -> Conv(8) -> ACTIVATION -> Conv(4) -> y"""
    opset, fn = ACTIVATIONS[name]
    b = Builder(opset)
    x = b.input("x", ["N", 3, 6, 6])
    b.output(b.conv(fn(b, b.conv(x, 3, 8, name="conv1")), 8, 4, name="conv2"))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    g = out_group(result, "conv1")
    assert g.prunable and g.channels == 8 and g.kept == 4
    if name == "PRelu[C,1,1]":
        assert g.members == ["conv1", "prelu", "conv2"]
        assert initializer(result.model, "slope").shape == (4, 1, 1)
    else:
        assert g.members == ["conv1", "conv2"]
    if name == "PRelu[1]":
        assert initializer(result.model, "slope").shape == (1,)


def test_unary_list_is_covered():
    """Every activation the brief names has a rule in UNARY (or the elementwise/identity rules)."""
    named = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softplus",
             "Mish", "Gelu", "Erf", "Dropout"}
    assert named <= set(UNARY)


def test_clip_with_scalar_activation_bound():
    """x -> Conv(8) -> Relu -> Conv(8) -> Clip(min = Reshape(graph input lo, [])) -> Conv(4) -> y

    A bound computed at run time is fine as long as it is a scalar."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    lo = b.input("lo", [1])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Clip", [b.conv(h, 8, 8, name="conv2"), b.op("Reshape", [lo, b.ints([], "scalar_shape")])],
             name="clip")
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv2").prunable


SIDES = ["left", "right"]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("const", ["scalar", "[1]", "[1,C,1,1]", "[C,1,1]"])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_with_constant(op, const, side):
    """x -> Conv(8) -> OP(h, c) or OP(c, h) -> Relu -> Conv(4) -> y

    A per-channel constant joins the group and is sliced; a scalar or [1] broadcasts and stays."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    shape = {"scalar": [], "[1]": [1], "[1,C,1,1]": [1, 8, 1, 1], "[C,1,1]": [8, 1, 1]}[const]
    c = b.positive(shape, "c")  # positive: Div by it (or of it) stays finite
    h = b.conv(x, 3, 8, name="conv1")
    if op == "Div" and side == "left":
        h = b.op("Add", [b.op("Abs", [h]), b.scalar(1.0)])  # c / h with h >= 1
    y = b.op(op, [h, c] if side == "right" else [c, h], name="arith")
    b.output(b.conv(b.op("Relu", [y]), 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4
    if const in ("[1,C,1,1]", "[C,1,1]"):
        assert "arith" in g.members
        assert initializer(result.model, "c").shape == tuple(4 if d == 8 else d for d in shape)
    else:
        assert "arith" not in g.members
        assert initializer(result.model, "c").shape == tuple(shape)


def test_constant_varying_over_space_broadcasts_over_channels():
    """x -> Conv(8) -> Relu -> Conv(8) -> Mul(c[1,1,6,6]) -> Conv(4) -> y      (c is not sliced)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Mul", [b.conv(h, 8, 8, name="conv2"), b.weight([1, 1, 6, 6], "c")], name="mul")
    b.output(b.conv(h, 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv2").prunable and "mul" not in out_group(result, "conv2").members
    assert initializer(result.model, "c").shape == (1, 1, 6, 6)


def test_constant_spanning_channels_and_space():
    """x -> Conv(8) -> Add(c[1,8,6,6]) -> Relu -> Conv(4) -> y      (c is sliced on axis 1 only)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Add", [b.conv(x, 3, 8, name="conv1"), b.weight([1, 8, 6, 6], "c")], name="add")
    b.output(b.conv(b.op("Relu", [h]), 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.members == ["conv1", "add", "conv2"]
    assert initializer(result.model, "c").shape == (1, 4, 6, 6)


def test_residual_add():
    r"""x -> Conv1(8) -> Relu -+-> Conv2(8) -> Relu -> Conv3(8) -> Add -> Relu -> Conv4(4) -> y
                              \-------------------------------/
    The Add ties conv1's and conv3's outputs; conv2's output is its own group."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    r = b.conv(b.op("Relu", [b.conv(h, 8, 8, name="conv2")]), 8, 8, name="conv3")
    y = b.op("Relu", [b.op("Add", [h, r], name="add")])
    b.output(b.conv(y, 8, 4, name="conv4"))
    result = prune(b.build())
    assert len(groups_of(result)) == 3
    g = out_group(result, "conv1")
    assert g == out_group(result, "conv3")
    assert g.prunable and g.kept == 4 and set(g.members) == {"conv1", "conv2", "conv3", "conv4"}
    g2 = out_group(result, "conv2")
    assert g2.prunable and g2.members == ["conv2", "conv3"]


def test_residual_add_on_graph_input_is_blocked():
    r"""x[N,8,6,6] -+-> Conv(8) -> Relu -> Conv(8) -> Add -> Conv(4) -> y
                   \---------------------------------/      (the skip is the graph input)"""
    b = Builder()
    x = b.input("x", ["N", 8, 6, 6])
    r = b.conv(b.op("Relu", [b.conv(x, 8, 8, name="conv1")]), 8, 8, name="conv2")
    b.output(b.conv(b.op("Add", [r, x], name="add"), 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4
    assert_blocked_by(out_group(result, "conv2"), "Add 'add'",
                      "input 1 ('x') has channels that cannot be pruned: they come from a graph input")


def test_add_broadcasting_graph_input_is_fine():
    """x -> Conv(8) -> Add(z[N,1,6,6]) -> Relu -> Conv(4) -> y      (z broadcasts along the channels)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    z = b.input("z", ["N", 1, 6, 6])
    h = b.op("Add", [b.conv(x, 3, 8, name="conv1"), z], name="add")
    b.output(b.conv(b.op("Relu", [h]), 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


@pytest.mark.parametrize("order", ["x*s", "s*x"])
def test_se_gate_mul(order):
    r"""x -> Conv1(8) -+-> GAP -> Conv(2,1x1) -> Relu -> Conv(8,1x1) -> Sigmoid -> s[N,8,1,1]
                      \-----------------------------------------------------> Mul -> Conv(4) -> y

    The gate broadcasts [N,8,1,1] * [N,8,H,W]; conv1's output and the expand conv's output are one group."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    s = b.op("Relu", [b.conv(b.op("GlobalAveragePool", [h]), 8, 2, k=1, name="se_reduce")])
    s = b.op("Sigmoid", [b.conv(s, 2, 8, k=1, name="se_expand")])
    y = b.op("Mul", [h, s] if order == "x*s" else [s, h], name="gate")
    b.output(b.conv(y, 8, 4, name="conv2"))
    result = prune(b.build())
    assert len(groups_of(result)) == 3
    g = out_group(result, "conv1")
    assert g == out_group(result, "se_expand")
    assert g.prunable and g.kept == 4 and set(g.members) == {"conv1", "se_reduce", "se_expand", "conv2"}
    squeeze = out_group(result, "se_reduce")
    assert squeeze.prunable and squeeze.channels == 2 and squeeze.kept == 1


def test_swish_x_times_sigmoid_x():
    r"""x -> Conv(8) -+-> Sigmoid -> Mul -> Conv(4) -> y
                     \----------/"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.conv(x, 3, 8, name="conv1")
    b.output(b.conv(b.op("Mul", [h, b.op("Sigmoid", [h])], name="swish"), 8, 4, name="conv2"))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_add_with_untracked_graph_input_is_blocked():
    """x -> Conv(8) -> Relu -> Conv(8) -> Add(z[N,8,6,6]) -> Relu -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    z = b.input("z", ["N", 8, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Add", [b.conv(h, 8, 8, name="conv2"), z], name="add")
    b.output(b.conv(b.op("Relu", [h]), 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    g = out_group(result, "conv2")
    assert g.kept == 8 and g.members == ["conv2"]  # the Add output is not tracked any more
    assert_blocked_by(g, "Add 'add'", "input 1 ('z') has channels that cannot be pruned: they come from a graph input")


def test_merge_on_different_axes_is_blocked():
    r"""x -> Conv(8) -> Relu -+-> ConvA(6) ---------------------------> Mul -> Conv(4) -> y
                             \-> ConvC(6) -> Transpose(0,2,1,3) ------/

    ConvA's channels are on axis 1, ConvC's on axis 2 after the Transpose: the Mul mixes them, both block."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    a = b.conv(h, 8, 6, name="convA")                      # [N, 6, 6, 6], channels on axis 1
    c = b.op("Transpose", [b.conv(h, 8, 6, name="convC")], perm=[0, 2, 1, 3])  # channels on axis 2
    y = b.op("Mul", [a, c], name="mul")
    b.output(b.conv(y, 6, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "convA"), "Mul 'mul'", "different axes")
    assert_blocked_by(out_group(result, "convC"), "Mul 'mul'", "different axes")


def test_sum_of_three_branches():
    r"""x -> Conv(8) -+-> Conv(8) -+
                     +-> Conv(8) -+-> Sum -> Relu -> Conv(4) -> y
                     \-----------+"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    a, c = b.conv(h, 8, 8, name="convA"), b.conv(h, 8, 8, name="convB", k=1)
    y = b.op("Relu", [b.op("Sum", [a, c, h], name="sum")])
    b.output(b.conv(y, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g == out_group(result, "convA") == out_group(result, "convB")
    assert g.prunable and g.kept == 4
    assert len(prunable(result)) == 1


def test_per_channel_constant_shared_by_two_groups_ties_them():
    r"""x -> ConvA(8) -> Mul(c[1,8,1,1]) -> Relu -> ConvC(4) -> y1
    x -> ConvB(8) -> Mul(c[1,8,1,1]) -> Relu -> ConvD(4) -> y2      (one constant c, sliced once)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    c = b.positive([1, 8, 1, 1], "c")
    a = b.op("Relu", [b.op("Mul", [b.conv(x, 3, 8, name="convA"), c], name="mulA")])
    d = b.op("Relu", [b.op("Mul", [b.conv(x, 3, 8, k=1, name="convB"), c], name="mulB")])
    b.output(b.conv(a, 8, 4, name="convC"), b.conv(d, 8, 4, name="convD"))
    result = prune(b.build())
    g = out_group(result, "convA")
    assert g == out_group(result, "convB")
    assert g.prunable and g.kept == 4 and {"mulA", "mulB"} <= set(g.members)
    assert initializer(result.model, "c").shape == (1, 4, 1, 1)


def test_where_with_a_causal_mask_sliced_at_run_time_broadcasts_over_heads():
    r"""x[N,T,16] -> MatMul(8) -> Reshape([0,0,2,4]) -> Transpose [N,2,T,4] -> Where(mask, h, -1e4) -> ...
    mask = tril[1,1,8,8][:, :, :T, :4]: two Slices whose bounds come from Shape(x) at run time (GPT-2's causal
    mask). Shape inference loses every size behind computed bounds; the mask's head axis is looked up through
    the Slices (they cut other axes) in the constant: 1, a broadcast."""
    import numpy as np

    b = Builder()
    x = b.input("x", ["N", "T", 16])
    h = b.op("Reshape", [b.matmul(x, 16, 8, name="fc1"), b.ints([0, 0, 2, 4])])
    h = b.op("Transpose", [h], perm=[0, 2, 1, 3])
    t = b.op("Slice", [b.op("Shape", [x]), b.ints([1]), b.ints([2])])
    tril = b.const(np.tril(np.ones((1, 1, 8, 8), dtype=bool)), "tril")
    mask = b.op("Slice", [b.op("Slice", [tril, b.ints([0]), t, b.ints([2])]), b.ints([0]), b.ints([4]), b.ints([3])])
    h = b.op("Where", [mask, h, b.scalar(-1e4)], name="where")
    h = b.op("Reshape", [b.op("Transpose", [h], perm=[0, 2, 1, 3]), b.ints([0, 0, 8])])
    b.output(b.matmul(h, 8, 4, name="fc2"))
    result = prune(b.build(), shapes={"x": [2, 5, 16]})
    g = out_group(result, "fc1")
    assert g.prunable and g.channels == 2 and g.kept == 1 and "where" not in " ".join(g.reasons)
