"""Attention heads and FFN neurons of BERT-style encoders prune through the generic channel-space rules:
Reshape [B, S, hidden] -> [B, S, H, D] makes a space of H heads (each owning D consecutive features),
Transpose and the batched QK^T / attention x V MatMuls keep H as a batch axis, and the Reshape back to
[B, S, hidden] is a merge with inner D. Whole heads go; head_dim stays."""

import re

import numpy as np
import onnxruntime as ort
import pytest

from models import transformers
import onnxprune
from oracle_check import assert_matches_oracle

SHAPES = {"input_ids": [2, 7], "attention_mask": [2, 7], "token_type_ids": [2, 7]}


@pytest.mark.parametrize("computed_reshape", [False, True], ids=["constant-target", "shape-gather-concat-target"])
def test_heads_and_ffn_neurons_prune_whole(computed_reshape):
    model = transformers.bert(layers=2, hidden=64, heads=4, ffn=128, vocab=100, computed_reshape=computed_reshape)
    result = assert_matches_oracle(model, shapes=SHAPES, ratio=0.5, round_to=1)
    pruned = sorted((g.channels, g.kept, g.unit) for g in result.report.pruned_groups)
    assert pruned == [(4, 2, 16), (4, 2, 16), (128, 64, 1), (128, 64, 1)]  # 2 of 4 heads of 16; half the FFN
    blocked = [g for g in result.report.groups if not g.prunable]
    assert blocked and all(g.channels == 64 for g in blocked)  # the hidden size stays, with its reason
    for g in blocked:  # each residual segment, named with the LayerNorm that reads it
        (reason,) = g.reasons
        assert re.fullmatch(r"Add '[^']+/Add': input 1 \('[^']+'\) has channels that cannot be pruned: they are the "
                            r"residual stream \(normalized by LayerNormalization '[^']+'\)", reason), reason
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 3), (3, 29)):  # any batch and sequence length after pruning
        feeds = {i.name: np.ones((batch, seq), np.int64) for i in session.get_inputs()}
        (hidden,) = session.run(None, feeds)
        assert hidden.shape == (batch, seq, 64) and np.isfinite(hidden).all()


def test_head_groups_are_not_rounded_to_channel_multiples():
    # the default --round-to 16 counts tensor channels: a head of 16 features is already a multiple
    result = assert_matches_oracle(transformers.bert_tiny(), shapes=SHAPES, ratio=0.5)
    heads = [g for g in result.report.groups if g.unit == 16]
    assert heads and all(g.kept == 2 for g in heads)


def test_heads_ratio_and_ffn_ratio_apart_from_ratio():
    model = transformers.bert(layers=2, hidden=64, heads=4, ffn=128, vocab=100)
    result = assert_matches_oracle(model, shapes=SHAPES, ratio=0.5, heads_ratio=0.25, ffn_ratio=0.75, round_to=1)
    kinds = sorted((g.kind, g.channels, g.kept) for g in result.report.groups if g.prunable)
    assert kinds == [("heads", 4, 3), ("heads", 4, 3), ("neurons", 128, 32), ("neurons", 128, 32)]
    # only heads: the FFN keeps its neurons when its ratio is 0
    result = assert_matches_oracle(model, shapes=SHAPES, ratio=0.5, ffn_ratio=0.0, round_to=1)
    assert sorted((g.kind, g.kept) for g in result.report.groups if g.prunable) == [
        ("heads", 2), ("heads", 2), ("neurons", 128), ("neurons", 128)]


def test_inspect_lists_heads_and_says_how_they_are_scored():
    report = onnxprune.analyze(transformers.bert_tiny(), shapes=SHAPES)
    text = report.format()
    assert "heads" in text and "Q, K and V" in text and "--heads-ratio" in text
    assert {g.kind for g in report.groups} >= {"heads", "neurons"}


def test_heads_of_an_odd_head_dim_prune_unaligned_and_say_so():
    """4 heads x 15 features at --round-to 16: no narrower width (15k) is a multiple of 16, and the dense 60 is
    not either; rounding in heads would keep every head, so the heads go in steps of 1, with a note."""
    model = transformers.bert(layers=2, hidden=60, heads=4, ffn=128, vocab=100)
    result = assert_matches_oracle(model, shapes=SHAPES, ratio=0.5)
    heads = [g for g in result.report.groups if g.kind == "heads"]
    assert heads and all(g.unit == 15 and g.kept == 2 for g in heads)
    assert all("pruned unaligned" in g.note for g in heads)
    assert "pruned x2: no narrower width is a multiple of --round-to 16" in result.report.format()
    # plain channels keep the rule: a group smaller than the step stays whole
    neurons = [g for g in result.report.groups if g.kind == "neurons" and g.prunable]
    assert neurons and all(g.kept % 16 == 0 and not g.note for g in neurons)
