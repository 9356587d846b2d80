"""Op rules for Gemm and MatMul (onnxprune/deps/ops/linear.py), checked against the masking oracle."""

import pytest

from graphs import Builder, assert_blocked_by, graph_nodes, groups_of, initializer, out_group
from oracle_check import assert_matches_oracle


def prune(model, **kw):
    return assert_matches_oracle(model, ratio=0.5, round_to=1, **kw)


@pytest.mark.parametrize("bias_shape", ["N", "1xN", "none"])
@pytest.mark.parametrize("trans_b1", [0, 1])
def test_gemm_bias_shapes(trans_b1, bias_shape):
    """x[N,16] -> Gemm(8, transB=t, bias [8] | [1,8] | none) -> Relu -> Gemm(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 16])
    w = b.weight([8, 16] if trans_b1 else [16, 8], "gemm1.w")
    bias = [] if bias_shape == "none" else [b.weight([8] if bias_shape == "N" else [1, 8], "gemm1.b")]
    y = b.op("Relu", [b.op("Gemm", [x, w, *bias], name="gemm1", transB=trans_b1)])
    b.output(b.gemm(y, 8, 4, name="gemm2"))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    g = out_group(result, "gemm1")
    assert g.prunable and g.channels == 8 and g.kept == 4 and g.members == ["gemm1", "gemm2"]
    assert initializer(result.model, "gemm1.w").shape == ((4, 16) if trans_b1 else (16, 4))
    if bias_shape != "none":
        assert initializer(result.model, "gemm1.b").shape == ((4,) if bias_shape == "N" else (1, 4))
    assert initializer(result.model, "gemm2.w").shape == (4, 4)


def test_gemm_scalar_bias_broadcasts():
    """x[N,16] -> Gemm(8, bias [1]) -> Relu -> Gemm(4) -> y       (a [1] bias is not sliced)"""
    b = Builder()
    x = b.input("x", ["N", 16])
    y = b.op("Relu", [b.op("Gemm", [x, b.weight([16, 8], "gemm1.w"), b.weight([1], "gemm1.b")], name="gemm1")])
    b.output(b.gemm(y, 8, 4, name="gemm2"))
    result = prune(b.build())
    assert out_group(result, "gemm1").kept == 4
    assert initializer(result.model, "gemm1.b").shape == (1,)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("trans_a", [0, 1])
def test_gemm_trans_a_trans_b(trans_a, trans_b):
    """x[N,16] -> Gemm(8) -> Relu [-> Transpose if transA] -> Gemm(4, transA, transB) -> y

    With transA the consumer reads its input's channels on axis 0 (after the Transpose)."""
    b = Builder()
    x = b.input("x", ["N", 16])
    y = b.op("Relu", [b.gemm(x, 16, 8, name="gemm1")])
    if trans_a:
        y = b.op("Transpose", [y], perm=[1, 0])
    b.output(b.gemm(y, 8, 6, name="gemm2", transA=trans_a, transB=trans_b))
    result = prune(b.build())
    g = out_group(result, "gemm1")
    assert g.prunable and g.kept == 4 and g.members == ["gemm1", "gemm2"]
    assert initializer(result.model, "gemm2.w").shape == ((6, 4) if trans_b else (4, 6))
    assert_blocked_by(out_group(result, "gemm2"), "graph output 'gemm2' keeps its shape")


def test_gemm_input_tracked_on_row_axis_is_blocked():
    """x[N,16] -> Gemm(8) -> Relu -> Gemm(8, transA=1) -> Relu -> Gemm(4) -> y

    Without a Transpose, transA makes Gemm contract over the batch axis: gemm1's channels become rows."""
    b = Builder()
    x = b.input("x", [8, 16])
    y = b.op("Relu", [b.gemm(x, 16, 8, name="gemm1")])
    y = b.op("Relu", [b.gemm(y, 8, 8, name="gemm2", transA=1)])
    b.output(b.gemm(y, 8, 4, name="gemm3"))
    result = prune(b.build())
    assert_blocked_by(out_group(result, "gemm1"), "Gemm 'gemm2'", "row axis")
    assert out_group(result, "gemm2").prunable and out_group(result, "gemm2").kept == 4


def test_gemm_with_activation_bias_is_blocked():
    """x[N,16] -> Gemm(8) -> Relu -> Gemm(8, C = graph input c[N,8]) -> Relu -> Gemm(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 16])
    c = b.input("c", ["N", 8])
    y = b.op("Relu", [b.gemm(x, 16, 8, name="gemm1")])
    y = b.op("Gemm", [y, b.weight([8, 8], "gemm2.w"), c], name="gemm2")
    b.output(b.gemm(b.op("Relu", [y]), 8, 4, name="gemm3"))
    result = prune(b.build())
    assert out_group(result, "gemm1").prunable
    assert_blocked_by(out_group(result, "gemm2"), "Gemm 'gemm2'", "bias C is not a constant")


def test_matmul_with_add_bias():
    """x[N,T,16] -> MatMul([16,8]) -> Add(b[8]) -> Relu -> MatMul([8,4]) -> Add(b[4]) -> y"""
    b = Builder()
    x = b.input("x", ["N", 5, 16])
    y = b.op("Relu", [b.matmul(x, 16, 8, name="fc1")])
    b.output(b.matmul(y, 8, 4, name="fc2"))
    result = prune(b.build())
    assert len(groups_of(result)) == 2
    g = out_group(result, "fc1")
    assert g.prunable and g.kept == 4 and g.members == ["fc1", "fc1.add", "fc2"]
    assert initializer(result.model, "fc1.w").shape == (16, 4)
    assert initializer(result.model, "fc1.b").shape == (4,)
    assert initializer(result.model, "fc2.w").shape == (4, 4)
    assert_blocked_by(out_group(result, "fc2"), "graph output 'fc2.add' keeps its shape")


@pytest.mark.parametrize("pool", [False, True], ids=["flatten", "gap-flatten"])
def test_flatten_gemm(pool):
    """x -> Conv(8) -> Relu [-> GlobalAveragePool] -> Flatten -> Gemm(10) -> y

    After Flatten channel i owns H*W consecutive features of the Gemm input."""
    b = Builder()
    x = b.input("x", ["N", 3, 4, 4])
    y = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    if pool:
        y = b.op("GlobalAveragePool", [y])
    k = 8 if pool else 8 * 16
    b.output(b.gemm(b.op("Flatten", [y], axis=1), k, 10, name="fc", transB=1))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "fc"]
    assert initializer(result.model, "fc.w").shape == (10, k // 2)


@pytest.mark.parametrize("target", [[0, -1], [-1, 128], [1, 128]], ids=["0,-1", "-1,128", "1,128"])
def test_reshape_matmul(target):
    """x -> Conv(8) -> Relu -> Reshape(target) -> MatMul([128,10]) -> y      (x is [N,3,4,4])

    A literal 128 in the target is rewritten to the pruned size."""
    b = Builder()
    x = b.input("x", [1, 3, 4, 4] if target[0] == 1 else ["N", 3, 4, 4])
    y = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    y = b.op("Reshape", [y, b.ints(target, "target")], name="reshape")
    b.output(b.matmul(y, 128, 10, name="fc", bias=False))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "fc"]
    assert initializer(result.model, "fc.w").shape == (64, 10)
    (reshape,) = graph_nodes(result.model, "Reshape")
    assert list(initializer(result.model, reshape.input[1])) == [64 if v == 128 else v for v in target]


def test_matmul_between_activations_on_a_batch_axis():
    """x -> Conv(8) -> Relu -> h[N,8,6,6];  MatMul(h, h) -> Relu -> Conv(4) -> y

    Axis 1 is a batch axis of the MatMul: channel i of the output comes from channel i of both operands."""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    y = b.op("Relu", [b.op("MatMul", [h, h], name="mm")])
    b.output(b.conv(y, 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_matmul_batch_axis_joins_two_producers():
    """x -> Conv(8) -> a[N,8,6,6]; x -> Conv(8) -> c[N,8,6,6];  MatMul(a, c) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    a = b.op("Relu", [b.conv(x, 3, 8, name="convA")])
    c = b.op("Relu", [b.conv(x, 3, 8, name="convC")])
    b.output(b.conv(b.op("MatMul", [a, c], name="mm"), 8, 4, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "convA")
    assert g == out_group(result, "convC")
    assert g.prunable and g.kept == 4 and set(g.members) == {"convA", "convC", "conv2"}


def test_matmul_batch_axis_broadcast_against_graph_input():
    """x -> Conv(8) -> Relu -> h[N,8,6,6];  MatMul(h, z[N,1,6,6]) -> Conv(4) -> y    (z broadcasts on axis 1)"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    z = b.input("z", ["N", 1, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    b.output(b.conv(b.op("MatMul", [h, z], name="mm"), 8, 4, name="conv2"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable and out_group(result, "conv1").kept == 4


def test_matmul_batch_axis_meets_untracked_operand_is_blocked():
    """x -> Conv(8) -> Relu -> Conv(8) -> h[N,8,6,6];  MatMul(h, z[N,8,6,6]) -> Conv(4) -> y"""
    b = Builder()
    x = b.input("x", ["N", 3, 6, 6])
    z = b.input("z", ["N", 8, 6, 6])
    h = b.op("Relu", [b.conv(x, 3, 8, name="conv1")])
    h = b.op("Relu", [b.conv(h, 8, 8, name="conv2")])
    b.output(b.conv(b.op("MatMul", [h, z], name="mm"), 8, 4, name="conv3"))
    result = prune(b.build())
    assert out_group(result, "conv1").prunable
    assert_blocked_by(out_group(result, "conv2"), "MatMul 'mm'", "batch axis meets an untracked operand")


def test_matmul_rows_pass_through():
    """x[N,3,L] -> Conv1d(8) -> Relu -> h[N,8,L];  MatMul(h, z[N,L,L]) -> Conv1d(4) -> y

    The channels are h's rows: they pass to the output's rows."""
    b = Builder()
    x = b.input("x", ["N", 3, 10])
    z = b.input("z", ["N", 10, 10])
    h = b.op("Relu", [b.conv(x, 3, 8, dims=1, name="conv1")])
    b.output(b.conv(b.op("MatMul", [h, z], name="mm"), 8, 4, dims=1, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]


def test_matmul_contraction_over_channels_is_blocked():
    """x[N,T,16] -> MatMul(8) = q;  x -> MatMul(8) -> Transpose = kT;  MatMul(q, kT) -> Softmax -> y

    q @ k^T sums over the channel axis of both operands: both groups are blocked."""
    b = Builder()
    x = b.input("x", ["N", 5, 16])
    q = b.matmul(x, 16, 8, name="q")
    k = b.op("Transpose", [b.matmul(x, 16, 8, name="k")], perm=[0, 2, 1])
    s = b.op("MatMul", [q, k], name="scores")
    v = b.matmul(x, 16, 6, name="v")
    y = b.op("MatMul", [b.op("Softmax", [s], axis=-1), v], name="attn")
    b.output(b.matmul(b.op("Relu", [y]), 6, 4, name="proj"))
    result = prune(b.build())
    assert_blocked_by(out_group(result, "q"), "MatMul 'scores'", "summed over")
    assert_blocked_by(out_group(result, "k"), "MatMul 'scores'", "summed over")
    g = out_group(result, "v")  # v's channels are the columns of attn: they pass through
    assert g.prunable and g.kept == 3 and g.members == ["v", "v.add", "proj"]


def test_matmul_weight_on_a_spatial_axis_passes_channels():
    r"""x[N,3,L] -> Conv1d(8) -> Relu -> MatMul(W[L, 6]) [N,8,6] -> Conv1d(4) -> y

    The constant weight mixes positions along L, not channels: they pass through as rows."""
    b = Builder()
    x = b.input("x", ["N", 3, 10])
    h = b.op("Relu", [b.conv(x, 3, 8, dims=1, name="conv1")])
    h = b.op("MatMul", [h, b.weight([10, 6], "w")], name="mm")
    b.output(b.conv(h, 8, 4, dims=1, name="conv2"))
    result = prune(b.build())
    g = out_group(result, "conv1")
    assert g.prunable and g.kept == 4 and g.members == ["conv1", "conv2"]
    assert initializer(result.model, "w").shape == (10, 6)
