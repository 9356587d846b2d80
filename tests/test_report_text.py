"""What the reports say: lists say when they are cut short, reasons use the README's terms, and the MAC share
means what a reader takes it to mean."""

from __future__ import annotations

import onnxprune
from onnxprune.report import GroupReport, PruneReport, Totals

from graphs import Builder, out_group


def pre_ln_blocks(blocks: int = 2):
    """x -> [LayerNorm -> fc1 -> Relu -> fc2 -> Add(x)] * blocks: the FFN of a pre-LN transformer."""
    b = Builder()
    x = b.input("x", ["N", 4, 16])
    for i in range(blocks):
        h = b.op("LayerNormalization", [x, b.positive([16]), b.weight([16])], name=f"/blocks.{i}/norm/LayerNormalization",
                 axis=-1)
        h = b.op("Relu", [b.matmul(h, 16, 32, name=f"/blocks.{i}/fc1/MatMul")])
        x = b.op("Add", [x, b.matmul(h, 32, 16, name=f"/blocks.{i}/fc2/MatMul")], name=f"/blocks.{i}/Add")
    b.output(x)
    return b.build()


def cnn_with_classifier():
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 16, name="c1")])
    y = b.op("Relu", [b.conv(y, 16, 16, name="c2")])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    b.output(b.gemm(y, 16, 10, name="fc"))
    return b.build()


def test_the_residual_stream_is_named_with_its_norm():
    result = onnxprune.prune(pre_ln_blocks(), round_to=1)
    second = out_group(result, "/blocks.1/fc2/MatMul")
    assert not second.prunable
    assert "the residual stream (normalized by LayerNormalization '/blocks.1/norm/LayerNormalization')" in \
        second.reasons[0], second.reasons
    text = result.report.format()
    assert "blocked x2:" in text and "(and 1 more like it)" in text


def test_the_blocked_summary_says_how_many_reasons_it_left_out():
    groups = [GroupReport(i, 8, 8, False, [f"n{i}"], [f"op{i} cannot follow kind {i}"]) for i in range(26)]
    report = PruneReport(Totals(1, 1), Totals(1, 1), groups, {})
    lines = [line for line in report.format().splitlines() if line.startswith("  ")]
    assert len([line for line in lines if line.startswith("  blocked x1:")]) == 8
    assert lines[-1].startswith("  +18 more reasons (18 groups)")


def test_mac_share_tells_one_sided_from_two_sided_layers():
    transformer = onnxprune.analyze(pre_ln_blocks(1))
    assert transformer.prunable_mac_share == 1.0 and transformer.both_sides_mac_share == 0.0
    assert "(input and output both prunable: 0.0%)" in transformer.format()
    cnn = onnxprune.analyze(cnn_with_classifier())
    assert 0.0 < cnn.both_sides_mac_share < cnn.prunable_mac_share  # c2 is two-sided; c1 and fc are one-sided
    assert cnn.to_dict()["both_sides_mac_share"] == round(cnn.both_sides_mac_share, 4)
    pruned = onnxprune.prune(pre_ln_blocks(1), ratio=0.5, round_to=1).report
    assert abs(pruned.after.macs / pruned.before.macs - 0.5) < 0.05  # one side of every layer: MACs fall by r


def test_neurons_legend_only_for_prunable_linear_layers():
    cnn = onnxprune.analyze(cnn_with_classifier()).format()
    assert "neurons:" not in cnn and "FFN" not in cnn  # the classifier head is blocked by the graph output
    mlp = onnxprune.analyze(pre_ln_blocks(1)).format()
    assert "neurons: output features of MatMul/Gemm layers" in mlp


def test_a_scalar_input_is_shown_as_scalar():
    b = Builder()
    x = b.input("x", [1, 3, 8, 8])
    gain = b.input("gain", [])
    b.output(b.conv(b.op("Mul", [b.op("Relu", [b.conv(x, 3, 8, name="c1")]), gain]), 8, 4, name="c2"))
    report = onnxprune.analyze(b.build())
    assert "gain=scalar" in report.format() and "gain=," not in report.format()
    pruned = onnxprune.prune(b.build(), round_to=1).report.format()
    assert "gain=scalar" in pruned
