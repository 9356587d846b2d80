r"""Op rules for onnxruntime's fused transformer ops, domain com.microsoft (onnxprune/deps/ops/fused.py),
checked with onnxruntime's CPU provider (it runs these contrib ops) and the masking oracle.

BiasGelu / FastGelu with a constant bias pass the channels through (the bias is sliced with them); Gelu and
QuickGelu are activations; SkipLayerNormalization normalizes over the hidden size and blocks it; Attention and
MultiHeadAttention compute the heads inside and are declined with a reason that says how to get a prunable
model."""

import numpy as np
import pytest

import onnxprune
from graphs import Builder, assert_blocked_by, group_with, initializer, out_group
from oracle_check import assert_matches_oracle, run

MS = [("com.microsoft", 1)]
N, T = "batch", "sequence"
SHAPES = {"x": [2, 5, 16]}


def prune(model, **kw):
    return assert_matches_oracle(model, shapes=SHAPES, ratio=0.5, round_to=1, **kw)


def ffn(act: str, with_bias: bool = True, bias_as_input: bool = False):
    r"""x[N,T,16] -> MatMul(16, 8) -> act(h, bias[8]) -> MatMul(8, 4) -> y"""
    b = Builder(extra_opsets=MS)
    x = b.input("x", [N, T, 16])
    h = b.matmul(x, 16, 8, name="fc1", bias=False)
    inputs = [h]
    if with_bias:
        inputs.append(b.input("bias", [8]) if bias_as_input else b.weight([8], "act.bias"))
    h = b.op(act, inputs, name="act", domain="com.microsoft")
    b.output(b.matmul(h, 8, 4, name="fc2", bias=False), shape=[N, T, 4])
    return b.build(infer_outputs=False)


@pytest.mark.parametrize("act", ["BiasGelu", "FastGelu"])
def test_bias_gelu_with_a_constant_bias_passes_the_channels(act):
    result = prune(ffn(act))
    g = out_group(result, "fc1")
    assert g.prunable and g.kept == 4 and g.members == ["fc1", "act", "fc2"]
    assert initializer(result.model, "act.bias").shape == (4,)
    assert initializer(result.model, "fc2.w").shape == (4, 4)


@pytest.mark.parametrize("act", ["FastGelu", "Gelu", "QuickGelu"])
def test_gelu_without_bias_is_an_activation(act):
    result = prune(ffn(act, with_bias=False))
    g = out_group(result, "fc1")
    assert g.prunable and g.kept == 4 and g.members == ["fc1", "fc2"]


def test_bias_gelu_with_an_activation_bias_is_blocked():
    report = onnxprune.analyze(ffn("BiasGelu", bias_as_input=True), shapes={**SHAPES, "bias": [8]})
    assert_blocked_by(group_with(report, "fc1"), "BiasGelu 'act'", "input 1 ('bias') has channels that cannot")


def test_skip_layer_normalization_blocks_the_hidden_size():
    r"""x[N,T,16] -> MatMul(16, 8) = a;  x -> MatMul(16, 8) -> Relu = s
    SkipLayerNormalization(a, s, gamma[8], beta[8]) -> MatMul(8, 4) -> y;  x -> MatMul(16, 6) -> Relu -> MatMul(6, 4)"""
    b = Builder(extra_opsets=MS)
    x = b.input("x", [N, T, 16])
    a = b.matmul(x, 16, 8, name="a", bias=False)
    s = b.op("Relu", [b.matmul(x, 16, 8, name="s", bias=False)])
    h = b.op("SkipLayerNormalization", [a, s, b.positive([8], "gamma"), b.weight([8], "beta")], name="skipln",
             domain="com.microsoft", epsilon=1e-5)
    y = b.matmul(h, 8, 4, name="out", bias=False)
    side = b.matmul(b.op("Relu", [b.matmul(x, 16, 6, name="f1", bias=False)]), 6, 4, name="f2", bias=False)
    b.output(b.op("Add", [y, side]), shape=[N, T, 4])
    result = prune(b.build(infer_outputs=False))
    for node in ("a", "s"):
        assert_blocked_by(out_group(result, node), "SkipLayerNormalization 'skipln'", "normalizes over the channel")
    assert out_group(result, "f1").prunable and out_group(result, "f1").kept == 3


def test_attention_is_declined_with_a_reason():
    r"""x[N,T,16] -> MatMul(16, 16) -> Relu -> Attention(W[16, 48], bias[48], 4 heads) -> MatMul(16, 4) -> + -> y
    x -> MatMul(16, 6) -> Relu -> MatMul(6, 4) -----------------------------------------------------------/

    The heads of the fused weight are a blocked group of the report: 4 heads of 4, with the reason."""
    b = Builder(extra_opsets=MS)
    x = b.input("x", [N, T, 16])
    h = b.op("Relu", [b.matmul(x, 16, 16, name="fc", bias=False)])
    h = b.op("Attention", [h, b.weight([16, 48], "qkv.w"), b.weight([48], "qkv.b")], name="attn",
             domain="com.microsoft", num_heads=4)
    side = b.matmul(b.op("Relu", [b.matmul(x, 16, 6, name="f1", bias=False)]), 6, 4, name="f2", bias=False)
    b.output(b.op("Add", [b.matmul(h, 16, 4, name="proj", bias=False), side]), shape=[N, T, 4])
    model = b.build(infer_outputs=False)
    result = prune(model)
    assert_blocked_by(out_group(result, "fc"), "Attention 'attn'", "packs heads in a fused weight", "unfuse the model")
    heads = out_group(result, "attn")
    assert heads.channels == 4 and heads.unit == 4 and not heads.prunable
    assert initializer(result.model, "qkv.w").shape == (16, 48)
    assert out_group(result, "f1").prunable and out_group(result, "f1").kept == 3
    assert run(result.model, {"x": np.ones((1, 9, 16), np.float32)})[0].shape == (1, 9, 4)


def test_multi_head_attention_is_declined_with_a_reason():
    r"""x[N,T,16] -> MatMul(16, 16) = q, k, v -> MultiHeadAttention(num_heads=4) -> MatMul(16, 4) -> y"""
    b = Builder(extra_opsets=MS)
    x = b.input("x", [N, T, 16])
    q, k, v = (b.matmul(x, 16, 16, name=n, bias=False) for n in ("q", "k", "v"))
    h = b.op("MultiHeadAttention", [q, k, v], name="mha", domain="com.microsoft", num_heads=4)
    side = b.matmul(b.op("Relu", [b.matmul(x, 16, 6, name="f1", bias=False)]), 6, 16, name="f2", bias=False)
    b.output(b.matmul(b.op("Add", [h, side]), 16, 4, name="proj", bias=False), shape=[N, T, 4])
    result = prune(b.build(infer_outputs=False))
    for node in ("q", "k", "v"):
        assert_blocked_by(out_group(result, node), "MultiHeadAttention 'mha'", "splits its inputs into heads")
    assert out_group(result, "f1").prunable and out_group(result, "f1").kept == 3


def test_onnxruntime_optimized_bert():
    """models/tx_bert_ts_ortopt.onnx: tx_bert_ts.onnx through onnxruntime's transformer optimizer
    (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu). The FFN neurons still prune
    through BiasGelu; the heads of each fused Attention and the hidden size are blocked, with their reasons."""
    from pathlib import Path

    import onnx

    path = Path(__file__).resolve().parents[1] / "models" / "tx_bert_ts_ortopt.onnx"
    model = onnx.load(str(path))
    shapes = {name: [2, 7] for name in ("input_ids", "attention_mask", "token_type_ids")}
    result = assert_matches_oracle(model, shapes=shapes, ratio=0.5, round_to=1)
    groups = result.report.groups
    assert sorted((g.channels, g.kept) for g in groups if g.prunable) == [(48, 24), (48, 24)]
    heads = [g for g in groups if g.unit == 8]
    assert len(heads) == 2 and all("packs heads in a fused weight" in " ".join(g.reasons) for g in heads)
    hidden = [g for g in groups if g.channels == 32]
    assert hidden and all("SkipLayerNormalization" in " ".join(g.reasons) for g in hidden)
    feeds = {name: np.ones((3, 11), np.int64) for name in shapes}
    (out,) = run(result.model, feeds)
    assert out.shape == (3, 11, 32) and np.isfinite(out).all()
