"""The committed PyTorch exports of small transformers (models/tx_*.onnx, written by
`python -m models.export_transformers`): BERT, GPT-2, ViT and Llama, each through the TorchScript and the
dynamo exporter. Whole attention heads and FFN neurons prune and match the masking oracle; the hidden size
(residual stream, LayerNorm / RMSNorm) stays, with its reason; the pruned models keep their inputs and
outputs and run at other batch sizes and sequence lengths. Every model: hidden 32, 4 heads of 8 (Llama:
2 key/value heads), FFN 48, 2 layers. No torch here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from graphs import Builder
from oracle_check import assert_matches_oracle, io_signature

MODELS = Path(__file__).resolve().parents[1] / "models"
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS, VOCAB = 32, 4, 2, 8, 48, 2, 50
NAMES = [f"{arch}_{exporter}" for arch in ("bert", "gpt2", "vit", "llama") for exporter in ("ts", "dynamo")]


def _inputs(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _shapes(model: onnx.ModelProto, batch: int = 2, seq: int = 7) -> dict[str, list[int]]:
    return {n: [batch, 3, 16, 16] if n == "pixel_values" else [batch, seq] for n in _inputs(model)}


def _feeds(model: onnx.ModelProto, batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch * 100 + seq)
    feeds = {}
    for name, shape in _shapes(model, batch, seq).items():
        if name == "pixel_values":
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
        elif name == "attention_mask":
            feeds[name] = (np.arange(seq)[None, :] < seq - 1).astype(np.int64).repeat(batch, 0)  # one pad token
        elif name == "token_type_ids":
            feeds[name] = (np.arange(seq)[None, :] >= seq // 2).astype(np.int64).repeat(batch, 0)
        else:
            feeds[name] = rng.integers(0, VOCAB, shape, dtype=np.int64)
    return feeds


@pytest.fixture(scope="module", params=NAMES)
def pruned(request):
    model = onnx.load(str(MODELS / f"tx_{request.param}.onnx"))
    result = assert_matches_oracle(model, shapes=_shapes(model), ratio=0.5, round_to=1)
    return request.param, model, result


def test_committed_exports_are_small_and_valid():
    for name in NAMES:
        path = MODELS / f"tx_{name}.onnx"
        assert path.stat().st_size < 512 * 1024, path
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)


RESIDUAL_REASON = re.compile(
    r"(?:Add|Concat) '[^']+': input (?:[01] \('[^']+'\)|'[^']+') has channels that cannot be pruned: they are the "
    r"residual stream \(normalized by (LayerNormalization|ReduceMean) '[^']+'\)"
)
RESIDUAL_ORIGINS = {  # the norm that reads the residual stream: Llama's RMSNorm is exported as ReduceMean and Mul
    "bert": {"LayerNormalization"}, "gpt2": {"LayerNormalization"}, "vit": {"LayerNormalization"},
    "llama": {"ReduceMean"},
}


def test_heads_and_ffn_neurons_prune_and_the_hidden_size_stays(pruned):
    name, model, result = pruned
    groups = result.report.groups
    ffn = [g for g in groups if g.channels == FFN]
    assert len(ffn) == LAYERS and all(g.prunable and g.kept == FFN // 2 and g.unit == 1 for g in ffn)
    heads = [g for g in groups if g.unit == HEAD_DIM]
    # grouped-query attention: a KV head goes with its group of HEADS // KV_HEADS query heads
    n = KV_HEADS if name.startswith("llama") else HEADS
    assert [(g.channels, g.kept, g.prunable) for g in heads] == [(n, n // 2, True)] * LAYERS
    hidden = [g for g in groups if g.channels == HIDDEN and g.unit == 1]
    assert hidden and all(not g.prunable and g.reasons for g in hidden)
    # each residual segment is blocked as the residual stream, named with the norm that reads it
    origins = set()
    for g in hidden:
        (reason,) = g.reasons
        found = RESIDUAL_REASON.fullmatch(reason)
        assert found, reason
        origins.add(found.group(1))
    assert origins == RESIDUAL_ORIGINS[name.split("_")[0]], (name, origins)


@pytest.mark.parametrize("name", NAMES)
def test_heads_are_found_without_pinned_shapes(name):
    """With batch and sequence left symbolic (no --shape): the same head and FFN groups are prunable."""
    import onnxprune

    report = onnxprune.analyze(onnx.load(str(MODELS / f"tx_{name}.onnx")))
    found = sorted((g.channels, g.unit) for g in report.groups if g.prunable)
    n = KV_HEADS if name.startswith("llama") else HEADS
    assert found == sorted([(n, HEAD_DIM)] * LAYERS + [(FFN, 1)] * LAYERS)


def test_pruned_models_keep_io_and_run_at_other_shapes(pruned):
    name, model, result = pruned
    assert io_signature(result.model) == io_signature(model)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(result.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    dense = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 3), (3, 16)):
        feeds = _feeds(model, batch, seq)
        (out,), (ref,) = session.run(None, feeds), dense.run(None, feeds)
        assert out.shape == ref.shape and np.isfinite(out).all()
        assert out.shape[0] == batch and (name.startswith("vit") or out.shape[1] == seq)


def _weight_shapes(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    inits = {t.name: t for t in model.graph.initializer}
    return sorted(
        tuple(inits[n.input[1]].dims) for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
    )


def test_llama_kv_heads_go_with_their_query_groups():
    model = onnx.load(str(MODELS / "tx_llama_dynamo.onnx"))
    result = assert_matches_oracle(model, shapes=_shapes(model), ratio=0.5, round_to=1)
    shapes = _weight_shapes(result.model)
    d = HIDDEN // HEADS
    # per layer: q_proj keeps 2 query heads (one group), k_proj and v_proj its 1 KV head, o_proj reads 2 heads;
    # gate_proj and up_proj keep the same 24 neurons, down_proj reads them
    assert shapes.count((HIDDEN, 2 * d)) == LAYERS and shapes.count((HIDDEN, d)) == 2 * LAYERS
    assert shapes.count((2 * d, HIDDEN)) == LAYERS
    assert shapes.count((HIDDEN, FFN // 2)) == 2 * LAYERS and shapes.count((FFN // 2, HIDDEN)) == LAYERS


def test_dynamo_shared_reshape_targets_get_one_copy_per_reader():
    """The dynamo exporter shares one [B, S, H, D] target between every Q/K/V view of every layer: each
    Reshape whose heads change while another node still reads the target gets its own copy."""
    model = onnx.load(str(MODELS / "tx_bert_dynamo.onnx"))
    result = assert_matches_oracle(model, shapes=_shapes(model), ratio=0.5, round_to=1)
    consts = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    producers = {o: n for n in result.model.graph.node for o in n.output}
    views = [n for n in result.model.graph.node if n.op_type == "Reshape"]
    split_heads = 0
    for view in views:
        concat = producers.get(view.input[1])
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
            continue
        assert [int(consts[p][0]) for p in concat.input[2:]] == [HEADS // 2, HEAD_DIM]
        split_heads += 1
    assert split_heads == 3 * LAYERS


def test_tied_embedding_and_lm_head_weight_is_blocked_with_its_reason():
    r"""ids -> Gather(wte[V, H]) -> MatMul(H, F) -> Relu -> MatMul(F, H) -> Gemm(wte, transB=1) -> logits

    The LM head reads the token embedding itself (GPT-2's tied weight, kept tied in the graph): the H
    channels the head reads are the embedding's columns too, which the Gather reads as a whole table. The
    group is blocked with a reason naming the Gather; the FFN between them still prunes."""
    b = Builder()
    ids = b.input("input_ids", ["batch", "sequence"], dtype=np.int64)
    wte = b.weight([VOCAB, HIDDEN], "wte")
    h = b.op("Gather", [wte, ids], name="embed")
    h = b.op("Relu", [b.matmul(h, HIDDEN, FFN, name="fc1", bias=False)])
    h = b.matmul(h, FFN, HIDDEN, name="fc2", bias=False)
    b.output(b.op("Gemm", [b.op("Reshape", [h, b.ints([-1, HIDDEN])]), wte], name="lm_head", transB=1))
    result = assert_matches_oracle(b.build(), shapes={"input_ids": [2, 5]}, ratio=0.5, round_to=1)
    groups = {tuple(g.members): g for g in result.report.groups}
    assert groups[("fc1", "fc2")].prunable and groups[("fc1", "fc2")].kept == FFN // 2
    tied = next(g for g in result.report.groups if "lm_head" in g.members and g.channels == HIDDEN)
    assert not tied.prunable and any("'wte' is also read by embed" in r for r in tied.reasons)
