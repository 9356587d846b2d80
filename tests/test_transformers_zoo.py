"""models.transformers: the tiny BERT is a valid ONNX model laid out as PyTorch exports it, runs in
onnxruntime at several sequence lengths, and computes BERT (checked against a numpy reference)."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is not an installed package: import it from the checkout
    sys.path.insert(0, str(ROOT))

from models import transformers as tz  # noqa: E402

LAYERS, HIDDEN, HEADS, FFN, VOCAB = 2, 64, 4, 128, 100
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module", params=[False, True], ids=["const_reshape", "computed_reshape"])
def tiny(request: pytest.FixtureRequest) -> onnx.ModelProto:
    return tz.bert_tiny(computed_reshape=request.param)


@pytest.fixture(scope="module")
def session(tiny: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(tiny.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(batch: int, seq: int, seed: int = 0, pad: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), dtype=np.int64)
    if pad:
        mask[:, seq - pad:] = 0
    return {
        "input_ids": rng.integers(0, VOCAB, (batch, seq), dtype=np.int64),
        "attention_mask": mask,
        "token_type_ids": (np.arange(seq)[None, :] >= seq // 2).astype(np.int64).repeat(batch, 0),
    }


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_valid_small_and_typed(tiny: onnx.ModelProto) -> None:
    onnx.checker.check_model(tiny, full_check=True)
    assert tiny.ByteSize() < 1 << 20
    assert [i.name for i in tiny.graph.input] == list(INPUTS)
    for vi in tiny.graph.input:
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert _dims(vi) == [tz.BATCH, tz.SEQUENCE]
    (out,) = tiny.graph.output
    assert out.name == "last_hidden_state" and _dims(out) == [tz.BATCH, tz.SEQUENCE, HIDDEN]
    assert {(o.domain, o.version) for o in tiny.opset_import} == {("", 17)}


@pytest.mark.parametrize("batch,seq", [(2, 7), (3, 16)])
def test_runs_at_two_sequence_lengths(session: ort.InferenceSession, batch: int, seq: int) -> None:
    (out,) = session.run(None, _feeds(batch, seq))
    assert out.shape == (batch, seq, HIDDEN)
    assert np.isfinite(out).all() and float(out.std()) > 0.1


def test_exporter_layout(tiny: onnx.ModelProto) -> None:
    nodes = {n.name: n for n in tiny.graph.node}
    ops = Counter(n.op_type for n in tiny.graph.node)
    assert ops["MatMul"] == LAYERS * 8  # Q, K, V, QK^T, PV, output, FFN in, FFN out
    assert ops["LayerNormalization"] == 1 + 2 * LAYERS
    assert ops["Erf"] == ops["Softmax"] == LAYERS
    inits = {t.name: t for t in tiny.graph.initializer}
    for proj in ("query", "key", "value"):
        mm = nodes[f"/encoder/layer.0/attention/self/{proj}/MatMul"]
        assert mm.input[1].startswith("onnx::MatMul_") and list(inits[mm.input[1]].dims) == [HIDDEN, HIDDEN]
        add = nodes[f"/encoder/layer.0/attention/self/{proj}/Add"]
        assert list(add.input) == [f"encoder.layer.0.attention.self.{proj}.bias", mm.output[0]]  # bias first
    ffn_in = nodes["/encoder/layer.1/intermediate/dense/MatMul"]
    assert list(inits[ffn_in.input[1]].dims) == [HIDDEN, FFN]
    perms = sorted(tuple(a.ints) for n in tiny.graph.node if n.op_type == "Transpose" for a in n.attribute)
    assert perms.count((0, 2, 3, 1)) == LAYERS and perms.count((0, 2, 1, 3)) == 3 * LAYERS


def test_reshape_targets(tiny: onnx.ModelProto) -> None:
    producers = {o: n for n in tiny.graph.node for o in n.output}
    targets = [producers[n.input[1]] for n in tiny.graph.node if n.op_type == "Reshape"]
    assert len(targets) == 4 * LAYERS
    kinds = {t.op_type for t in targets}
    if kinds == {"Constant"}:
        values = sorted(numpy_helper.to_array(t.attribute[0].t).tolist() for t in targets)
        assert values.count([0, 0, HEADS, HIDDEN // HEADS]) == 3 * LAYERS
        assert values.count([0, 0, HIDDEN]) == LAYERS
    else:
        assert kinds == {"Concat"}
        for concat in targets:  # Shape -> Gather -> Unsqueeze for the batch and sequence dims
            chain = [producers[producers[i].input[0]] for i in concat.input[:2]]
            assert [n.op_type for n in chain] == ["Gather", "Gather"]
            assert all(producers[g.input[0]].op_type == "Shape" for g in chain)


def test_padding_is_masked(session: ort.InferenceSession) -> None:
    """Changing the tokens of padded positions leaves the other positions' outputs unchanged."""
    a = _feeds(2, 10, seed=1, pad=3)
    b = {k: v.copy() for k, v in a.items()}
    b["input_ids"][:, -3:] = (b["input_ids"][:, -3:] + 1) % VOCAB
    (oa,), (ob,) = session.run(None, a), session.run(None, b)
    np.testing.assert_allclose(oa[:, :7], ob[:, :7], atol=1e-5)
    assert not np.allclose(oa[:, 7:], ob[:, 7:])


def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """BERT's forward pass in numpy, with the weights looked up through the exporter's node names."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}

    def linear(scope: str, prefix: str, x):
        return x @ w[nodes[f"{scope}/MatMul"].input[1]] + w[f"{prefix}.bias"]

    def ln(prefix: str, x):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + tz.LN_EPSILON) * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    erf = np.vectorize(math.erf)
    ids, tt = feeds["input_ids"], feeds["token_type_ids"]
    b, s = ids.shape
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][tt]
         + w["embeddings.position_embeddings.weight"][np.arange(s)][None])
    x = ln("embeddings.LayerNorm", x)
    mask = (1.0 - feeds["attention_mask"][:, None, None, :]) * tz.MASK_VALUE
    d = HIDDEN // HEADS
    for i in range(LAYERS):
        sa, p = f"/encoder/layer.{i}/attention/self", f"encoder.layer.{i}"

        def heads(name: str):
            return linear(f"{sa}/{name}", f"{p}.attention.self.{name}", x).reshape(b, s, HEADS, d).transpose(0, 2, 1, 3)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, HIDDEN)
        attn = ln(f"{p}.attention.output.LayerNorm",
                  linear(f"/encoder/layer.{i}/attention/output/dense", f"{p}.attention.output.dense", ctx) + x)
        h = linear(f"/encoder/layer.{i}/intermediate/dense", f"{p}.intermediate.dense", attn)
        h = h * 0.5 * (1.0 + erf(h / math.sqrt(2.0)))
        x = ln(f"{p}.output.LayerNorm", linear(f"/encoder/layer.{i}/output/dense", f"{p}.output.dense", h) + attn)
    return x


@pytest.mark.parametrize("seq,pad", [(6, 0), (12, 4)])
def test_matches_numpy_reference(tiny: onnx.ModelProto, session: ort.InferenceSession, seq: int, pad: int) -> None:
    feeds = _feeds(2, seq, seed=seq, pad=pad)
    (out,) = session.run(None, feeds)
    np.testing.assert_allclose(out, _reference(tiny, feeds), atol=2e-4, rtol=1e-4)


def test_bert_builder_arguments() -> None:
    small = tz.bert(1, 32, 2, 48, 50, max_pos=16, seed=3)
    onnx.checker.check_model(small, full_check=True)
    # word + position + token-type tables, embedding LN, then per layer 4 attention linears, 2 FFN linears, 2 LNs
    expected = (50 + 16 + 2) * 32 + 2 * 32 + 4 * (32 * 32 + 32) + (32 * 48 + 48) + (48 * 32 + 32) + 2 * 2 * 32
    assert tz.param_count(small) == expected
    with pytest.raises(ValueError):
        tz.bert(1, 30, 4, 48, 50)
