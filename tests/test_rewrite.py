r"""The model's journey through prune: the analysis keeps the dense model, and the rewrite is a new model.

The test model has every kind of rewrite fix that edits a node: a Reshape target built by a Concat that two
Reshapes share (each gets its own copy), a Split's sizes and a grouped Conv's group count."""

import numpy as np
import onnx

import onnxprune
from graphs import Builder, shared_reshape_target
from oracle_check import run
from onnxprune.api import _analysis
from onnxprune.inputs import make_inputs
from onnxprune.oracle import masked, removed_reads
from onnxprune.rewrite import rewrite

SHAPES = {"x": [8, 3, 4, 4], "z": [8, 2]}


def fixes_model() -> onnx.ModelProto:
    r"""graphs.shared_reshape_target (two Reshapes of one computed target), and
    x -> ConvC(12) -> Relu -> Conv(group 12) -> Split([4, 8]) -> ConvD, ConvE -> yD, yE
    z -> Gemm(6) -> Relu -> Gemm(3) -> yz"""
    b = Builder()
    x, z = shared_reshape_target(b)
    h = b.conv(b.op("Relu", [b.conv(x, 3, 12, name="convC")]), 12, 12, group=12, name="depthwise")
    p, q = b.op("Split", [h, b.ints([4, 8], "split")], outputs=2, name="split", axis=1)
    b.output(b.conv(p, 4, 4, name="convD"), b.conv(q, 8, 4, name="convE"))
    b.output(b.gemm(b.op("Relu", [b.gemm(z, 2, 6, name="fc1")]), 6, 3, name="fc2"))
    return b.build()


def test_the_analysis_keeps_the_dense_model_through_prune_and_recovery():
    model = fixes_model()
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    _analysis(folded, SHAPES, None)  # what prune analyzes: the input, folded
    calib = make_inputs(model, shapes=SHAPES, seed=3)
    result = onnxprune.prune(model, ratio=0.5, round_to=1, shapes=SHAPES, calib=calib, recover="all")
    assert result.recovery is not None and result.recovery.layers
    dense = result.analysis.graph.model
    assert dense.SerializeToString() == folded.SerializeToString()
    assert len(result.model.graph.initializer) and result.model is not dense


def test_one_analysis_rewritten_with_two_plans_gives_two_right_models():
    model = fixes_model()
    _, analysis, _ = _analysis(model, SHAPES, None)
    before = model.SerializeToString()
    prunable = [g for g in analysis.groups if g.prunable]
    assert len(prunable) >= 4
    first = {g.space: np.arange(0, g.size, 2) for g in prunable}  # every other channel
    second = {g.space: np.arange(g.size // 4, g.size) for g in prunable[::2]}  # a quarter of every other group
    feeds = make_inputs(model, shapes=SHAPES, samples=2, seed=1)
    pruned = []
    for keep in (first, second):
        out = rewrite(analysis, keep)
        assert model.SerializeToString() == before, "rewrite changed the analyzed model"
        onnx.checker.check_model(out, full_check=True)
        reference = masked(model, removed_reads(analysis, keep))
        for feed in feeds:
            for want, got in zip(run(reference, feed), run(out, feed)):
                assert want.shape == got.shape
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want))))
        pruned.append(out)
    sizes = [sum(int(np.prod(t.dims)) for t in m.graph.initializer) for m in pruned]
    assert sizes[0] != sizes[1]
    assert {n.name for n in pruned[0].graph.node if n.op_type == "Concat"} == {"target", "target__for_reshapeA"}
