"""onnxprune.fp16: float16 copies keep the model's I/O types and compute the same function (onnxruntime, CPU)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import transformers, zoo
from onnxprune.bench import BenchConfig, bench
from onnxprune.errors import OptionError
from onnxprune.fp16 import FP16_MAX, check_float16, to_float16
from onnxprune.inputs import make_inputs


def _io(model):
    return [(v.name, v.type.tensor_type.elem_type) for v in list(model.graph.input) + list(model.graph.output)]


@pytest.mark.parametrize("build, shapes", [
    (lambda: zoo.resnet50(width=8, image=32, num_classes=10), None),
    (lambda: zoo.mobilenet_v2(0.25, image=32, num_classes=10), None),
    (transformers.bert_tiny, {n: [2, 16] for n in ("input_ids", "attention_mask", "token_type_ids")}),
])
def test_zoo_models_keep_io_and_outputs(build, shapes):
    model = build()
    before = model.SerializeToString()
    half = to_float16(model)
    assert model.SerializeToString() == before  # works on a copy
    onnx.checker.check_model(half)
    assert _io(half) == _io(model)
    floats = [t for t in half.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(t.data_type == TensorProto.FLOAT16 for t in floats)
    feeds = make_inputs(model, shapes, samples=2, seed=1)
    assert check_float16(model, half, feeds) > 0.999
    sess = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds[0])[0]
    assert out.dtype == np.float32 and np.isfinite(out).all()


def _tiny(nodes, inits, out_name="y"):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [2, 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_constants_casts_and_clipping():
    # y = (x + c) * cast(int_one) + big * 0, where big is -3.4e38: without clipping -inf * 0 = NaN
    nodes = [
        helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Constant", [], ["big"], value=numpy_helper.from_array(np.array(-3.4e38, np.float32))),
        helper.make_node("Constant", [], ["zero"], value_float=0.0),
        helper.make_node("Constant", [], ["one_i"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Cast", ["one_i"], ["one"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "c"], ["a"]),
        helper.make_node("Mul", ["a", "one"], ["b"]),
        helper.make_node("Mul", ["big", "zero"], ["z"]),
        helper.make_node("Add", ["b", "z"], ["y"]),
    ]
    model = _tiny(nodes, [])
    half = to_float16(model)
    onnx.checker.check_model(half)
    cast = next(n for n in half.graph.node if n.op_type == "Cast" and n.input == ["one_i"])
    assert cast.attribute[0].i == TensorProto.FLOAT16
    big = next(n for n in half.graph.node if n.output == ["big"])
    assert numpy_helper.to_array(big.attribute[0].t) == np.float16(-FP16_MAX)
    assert [n.op_type for n in half.graph.node][0] == "Cast" and half.graph.node[-1].output == ["y"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x + [1.0, 2.0, 3.0])


def test_output_read_inside_the_graph_and_subgraphs_refused():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["y"], ["n"])]
    model = _tiny(nodes, [])
    model.graph.output.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, [2, 3]))
    half = to_float16(model)
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], np.float32)
    y, n = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(n, -np.maximum(x, 0))
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "b", [],
                             [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 3])])
    cond = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    with pytest.raises(OptionError, match="If/Loop/Scan"):
        to_float16(_tiny([cond], [numpy_helper.from_array(np.array(True), "c")]))


def test_check_refuses_a_conversion_that_changes_the_function():
    model = _tiny([helper.make_node("Add", ["x", "w"], ["y"])],
                  [numpy_helper.from_array(np.ones((2, 3), np.float32), "w")])
    broken = to_float16(model)
    broken.graph.initializer[0].CopyFrom(numpy_helper.from_array(-np.ones((2, 3), np.float16) * 50, "w"))
    feeds = make_inputs(model, samples=1)
    with pytest.raises(OptionError, match="float16 copy"):
        check_float16(model, broken, feeds)


def test_bench_fp16_times_checked_float16_copies(tmp_path):
    dense = zoo.resnet18(width=8, image=32, num_classes=10)
    path = tmp_path / "r18.onnx"
    onnx.save(dense, str(path))
    cfg = BenchConfig(warmup=1, runs=2, rounds=2, pause_s=0.0, visit_ms=0.0, fp16=True)
    report = bench([str(path), str(path)], cfg)
    assert all("float16 (cosine to float32" in r.note for r in report.rows)
    assert all(r.median_ms > 0 for r in report.rows)
    assert "float16 copies" in report.to_dict()["method"]
