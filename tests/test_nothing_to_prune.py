""""Nothing to prune" names the real cause, and what onnxruntime can tell about shapes is used.

Two shapes of model found in the wild (pretrained models shipped in PyPI wheels):
- a voice-activity detector whose Convs all sit inside the branches of an If (silero-vad style);
- a scikit-learn MLP exported by skl2onnx: an ai.onnx.ml Scaler, whose output shape onnx cannot infer, then
  MatMuls with initializer weights.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.errors import NothingToPruneError
from onnxprune.shapes import ShapeInfo, infer_shapes

from graphs import Builder, prunable
from oracle_check import assert_matches_oracle
from cli_run import run


def scaler_mlp() -> onnx.ModelProto:
    b = Builder(extra_opsets=[("ai.onnx.ml", 1)])
    x = b.input("x", ["N", 4])
    s = b.op("Scaler", [x], domain="ai.onnx.ml", name="Scaler_0", offset=[0.1, 0.2, 0.3, 0.4], scale=[1.0, 2.0, 3.0, 4.0])
    y = b.op("Relu", [b.matmul(s, 4, 32, name="mm1")])
    y = b.op("Relu", [b.matmul(y, 32, 16, name="mm2")])
    b.output(b.matmul(y, 16, 3, name="mm3"), shape=["N", 3])
    return b.build(infer_outputs=False)


def _branch(name: str, seed: int) -> onnx.GraphProto:
    rng = np.random.default_rng(seed)
    nodes, inits, x, c = [], [], "x", 1
    for i in range(6):
        w = numpy_helper.from_array(rng.standard_normal((16, c, 3)).astype(np.float32), f"{name}.conv{i}.w")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [x, w.name], [f"{name}.c{i}"], name=f"{name}/conv{i}", pads=[1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}.c{i}"], [f"{name}.r{i}"], name=f"{name}/relu{i}"))
        x, c = f"{name}.r{i}", 16
    nodes.append(helper.make_node("ReduceMean", [x], [f"{name}.out"], name=f"{name}/mean", axes=[1, 2], keepdims=0))
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}.out", TensorProto.FLOAT, ["N"])],
                             inits)


def if_branch_convs() -> onnx.ModelProto:
    """x [N, 1, 64] and a scalar sample rate: If(sr == 16000) runs one of two 6-Conv stacks."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 64]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    nodes = [helper.make_node("Equal", ["sr", "k16000"], ["cond"], name="Equal_0"),
             helper.make_node("If", ["cond"], ["out"], name="If_0", then_branch=_branch("then", 1),
                              else_branch=_branch("else", 2))]
    graph = helper.make_graph(nodes, "vad", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N"])],
                              [numpy_helper.from_array(np.array(16000, dtype=np.int64), "k16000")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_convs_inside_if_are_named(tmp_path):
    model = if_branch_convs()
    with pytest.raises(NothingToPruneError) as err:
        onnxprune.prune(model)
    message = str(err.value)
    assert "If 'If_0'" in message and "12 Conv" in message and "subgraphs" in message
    assert "reads a constant weight" not in message
    path = tmp_path / "vad.onnx"
    onnx.save(model, str(path))
    result = run("prune", path, "-o", tmp_path / "out.onnx")
    assert result.exit_code == 3 and "If 'If_0'" in result.stderr
    report = run("inspect", path)
    assert "12 Conv inside If 'If_0'" in report.stdout


def test_layers_inside_a_subgraph_are_noted_beside_other_groups():
    b = Builder()
    x = b.input("x", ["N", 3, 8, 8])
    y = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="c1")]), 8, 4, name="c2")
    b.output(y)
    model = b.build()
    body = helper.make_graph([helper.make_node("Conv", ["x", "c1.w"], ["inner"], name="inner_conv", pads=[1, 1, 1, 1])],
                             "body", [], [helper.make_tensor_value_info("inner", TensorProto.FLOAT, None)])
    model.graph.node.append(helper.make_node("Equal", ["c", "c"], ["cond"], name="eq"))
    model.graph.node.append(helper.make_node("If", ["cond"], ["side"], name="If_side", then_branch=body,
                                             else_branch=body))
    model.graph.initializer.append(numpy_helper.from_array(np.array(1, dtype=np.int64), "c"))
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    report = onnxprune.analyze(model)
    assert any("If 'If_side'" in n and "2 Conv" in n for n in report.notes), report.notes


def test_scaler_mlp_is_pruned_with_the_shapes_onnxruntime_computes():
    model = scaler_mlp()
    result = assert_matches_oracle(model, round_to=1)
    assert {g.channels for g in prunable(result)} == {32, 16}
    assert result.report.after.macs < result.report.before.macs


def test_observed_shapes_keep_dim_names_and_fill_only_what_is_missing():
    model = scaler_mlp()
    info = infer_shapes(model)
    assert info.dims("Scaler_0") == ("N", 4) and info.dims("mm1") == ("N", 32)
    pinned = infer_shapes(model, {"x": [5, 4]})
    assert pinned.dims("mm2") == (5, 16)


def test_unknown_shape_names_the_op_inference_cannot_follow(monkeypatch):
    monkeypatch.setattr("onnxprune.observed_shapes.observed_shapes", lambda *a, **k: ShapeInfo())
    with pytest.raises(NothingToPruneError) as err:
        onnxprune.prune(scaler_mlp())
    message = str(err.value)
    assert "MatMul 'mm1'" in message and "ai.onnx.ml Scaler 'Scaler_0'" in message
    assert "--shape does not reach past it" in message and "reads a constant weight" not in message


def test_observed_dims_follow_each_dim_name_and_leave_derived_sizes_unknown():
    b = Builder(extra_opsets=[("ai.onnx.ml", 1)])
    x, y = b.input("x", ["N", 4]), b.input("y", ["M", 4])
    sx = b.op("Scaler", [x], domain="ai.onnx.ml", name="sx", offset=[0.0] * 4, scale=[2.0] * 4)
    sy = b.op("Scaler", [y], domain="ai.onnx.ml", name="sy", offset=[0.0] * 4, scale=[3.0] * 4)
    both = b.op("Concat", [sx, sy], name="both", axis=0)
    b.output(b.matmul(both, 4, 8, name="mm"), shape=[None, 8])
    info = infer_shapes(b.build(infer_outputs=False))
    assert info.dims("sx") == ("N", 4) and info.dims("sy") == ("M", 4)
    assert info.dims("both") == (None, 4)  # N + M: neither name, and no number either
    pinned = infer_shapes(b.build(infer_outputs=False), {"x": [2, 4]})
    assert pinned.dims("sx") == (2, 4) and pinned.dims("sy") == ("M", 4)


@pytest.mark.parametrize("options, cause", [
    ({"ratio": 0.05}, "rounds back to its full size at --ratio 0.05, --round-to 16"),
    ({"ratio": 0.0}, "the ratios are 0"),
    ({"ratio": 0.5, "exclude": ["*"]}, "every prunable group is excluded"),
])
def test_a_plan_that_removes_nothing_names_the_real_cause(options, cause):
    from pathlib import Path

    model = Path(__file__).resolve().parents[1] / "models" / "digits_cnn.onnx"
    notes = onnxprune.prune(model, **options).report.notes
    assert any(n.startswith("no channel was removed") and cause in n for n in notes), notes
