"""The fine-tuning student runs ONNX ops exactly as onnxruntime does: one small graph per op and attribute case,
plus every committed example model (both exporters, Constant weights, dynamic dims, contrib ops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from graphs import ir_version_for
from onnxprune.deps.ops import default_registry
from onnxprune.finetune import ops
from onnxprune.finetune.student import Student, StudentError, unsupported_ops, write_back

ROOT = Path(__file__).resolve().parent.parent
rng = np.random.default_rng(0)


def _model(node, inputs: dict, inits=(), opset=17, outputs=1, ms=False) -> onnx.ModelProto:
    """One node; `inputs` name -> array (fed at run time); `inits` are initializers."""
    vis = [h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for n, a in inputs.items()]
    outs = [h.make_empty_tensor_value_info(o) for o in list(node.output)[:outputs] if o]
    graph = h.make_graph([node], "g", vis, outs, list(inits))
    opsets = [h.make_opsetid("", opset)] + ([h.make_opsetid(ops.MS, 1)] if ms else [])
    return h.make_model(graph, opset_imports=opsets, ir_version=ir_version_for(opset))


def _same(model: onnx.ModelProto, feeds: dict, atol=1e-5):
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    student = Student(model)
    with torch.no_grad():
        got = student(*[torch.from_numpy(feeds[n]) for n in student.input_names])
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        g = g.numpy()
        assert list(g.shape) == list(np.shape(r))
        np.testing.assert_allclose(g.astype(np.float64), np.asarray(r, np.float64), atol=atol, rtol=1e-4)


def _x(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _i(values):
    return np.asarray(values, np.int64)


X4 = _x(2, 3, 9, 10)

UNARY = ["Relu", "Sigmoid", "Tanh", "Softsign", "Erf", "Abs", "Neg", "Exp", "Floor", "Ceil", "Round", "Sign",
         "Sin", "Cos", "Atan", "Sinh", "HardSwish", "Softplus", "Mish", "Asinh"]


@pytest.mark.parametrize("op_type", UNARY)
def test_unary(op_type):
    _same(_model(h.make_node(op_type, ["x"], ["y"]), {"x": X4}, opset=18), {"x": X4})


@pytest.mark.parametrize("op_type,attrs", [
    ("LeakyRelu", {"alpha": 0.2}), ("HardSigmoid", {"alpha": 0.1666, "beta": 0.5}), ("Elu", {"alpha": 0.7}),
    ("Selu", {}), ("Celu", {"alpha": 1.5}), ("ThresholdedRelu", {"alpha": 0.3}), ("Shrink", {"bias": 0.1, "lambd": 0.4}),
    ("Gelu", {"approximate": "tanh"}), ("Gelu", {}), ("Softmax", {"axis": 1}), ("LogSoftmax", {}),
    ("Hardmax", {"axis": 2}), ("LpNormalization", {"axis": 1, "p": 2}), ("Flatten", {"axis": 2}),
    ("Transpose", {"perm": [0, 2, 3, 1]}), ("Transpose", {}), ("ArgMax", {"axis": 1, "keepdims": 0}),
    ("ArgMin", {"axis": -1, "select_last_index": 1}), ("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
    ("GlobalLpPool", {"p": 2}), ("Dropout", {}), ("Identity", {}), ("Cast", {"to": T.FLOAT16}),
])
def test_attribute_ops(op_type, attrs):
    _same(_model(h.make_node(op_type, ["x"], ["y"], **attrs), {"x": X4}, opset=20), {"x": X4}, atol=2e-3)


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_before_and_after_opset_13(opset):
    _same(_model(h.make_node("Softmax", ["x"], ["y"], axis=1), {"x": X4}, opset=opset), {"x": X4})


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow"])
def test_binary(op_type):
    a, b = np.abs(_x(2, 3, 4, 5)) + 0.5, _x(3, 1, 1)
    _same(_model(h.make_node(op_type, ["a", "b"], ["y"]), {"a": a, "b": b}), {"a": a, "b": b})


@pytest.mark.parametrize("op_type", ["Equal", "Less", "GreaterOrEqual"])
def test_comparisons_and_where(op_type):
    a, b = _x(4, 5).round(), _x(4, 5).round()
    cmp = h.make_node(op_type, ["a", "b"], ["c"])
    where = h.make_node("Where", ["c", "a", "b"], ["y"])
    graph = h.make_graph([cmp, where], "g", [h.make_tensor_value_info(n, T.FLOAT, [4, 5]) for n in "ab"],
                         [h.make_empty_tensor_value_info("y")])
    _same(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), {"a": a, "b": b})


@pytest.mark.parametrize("attrs,w_shape", [
    ({"pads": [1, 1, 1, 1], "strides": [2, 2]}, (4, 3, 3, 3)),
    ({"pads": [0, 1, 2, 1], "dilations": [2, 1]}, (4, 3, 3, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (4, 3, 3, 3)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (4, 3, 2, 2)),
    ({"group": 3, "pads": [1, 1, 1, 1]}, (6, 1, 3, 3)),
])
def test_conv(attrs, w_shape):
    w, b = _x(*w_shape), _x(w_shape[0])
    node = h.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    _same(_model(node, {"x": X4}, [nh.from_array(w, "w"), nh.from_array(b, "b")]), {"x": X4}, atol=1e-4)


@pytest.mark.parametrize("attrs", [{"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
                                   {"strides": [2, 2], "group": 3}])
def test_conv_transpose(attrs):
    w = _x(3, 2 if "group" not in attrs else 1, 3, 3)
    node = h.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    _same(_model(node, {"x": X4}, [nh.from_array(w, "w")]), {"x": X4}, atol=1e-4)


@pytest.mark.parametrize("op_type,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [0, 0, 2, 2]}),
    ("MaxPool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 3], "pads": [0, 1, 1, 0]}),
    ("LpPool", {"kernel_shape": [2, 2], "strides": [2, 2], "p": 2}),
])
def test_pools(op_type, attrs):
    _same(_model(h.make_node(op_type, ["x"], ["y"], **attrs), {"x": X4}, opset=18), {"x": X4})


@pytest.mark.parametrize("op_type", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2", "ReduceLogSumExp",
                                     "ReduceSumSquare", "ReduceProd", "ReduceL1"])
@pytest.mark.parametrize("opset", [13, 18])
def test_reductions(op_type, opset):
    x = np.abs(_x(2, 3, 4)) + 0.5
    if opset >= 18 or op_type == "ReduceSum":
        node = h.make_node(op_type, ["x", "axes"], ["y"], keepdims=0)
        _same(_model(node, {"x": x}, [nh.from_array(_i([1, -1]), "axes")], opset=opset), {"x": x})
    else:
        _same(_model(h.make_node(op_type, ["x"], ["y"], axes=[1, -1]), {"x": x}, opset=opset), {"x": x})


def test_normalizations():
    x = X4
    scale, bias, mean, var = _x(3), _x(3), _x(3), np.abs(_x(3)) + 0.5
    bn = h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)
    inits = [nh.from_array(a, n) for a, n in ((scale, "s"), (bias, "b"), (mean, "m"), (var, "v"))]
    _same(_model(bn, {"x": x}, inits), {"x": x})
    inst = h.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])
    _same(_model(inst, {"x": x}, inits[:2]), {"x": x}, atol=1e-4)
    ln = h.make_node("LayerNormalization", ["x", "g", "b2"], ["y"], axis=-1)
    _same(_model(ln, {"x": x}, [nh.from_array(_x(10), "g"), nh.from_array(_x(10), "b2")]), {"x": x}, atol=1e-4)


@pytest.mark.parametrize("node,inits,opset", [
    (h.make_node("Reshape", ["x", "s"], ["y"]), [nh.from_array(_i([0, -1, 10]), "s")], 17),
    (h.make_node("Unsqueeze", ["x", "a"], ["y"]), [nh.from_array(_i([1, -1]), "a")], 17),
    (h.make_node("Unsqueeze", ["x"], ["y"], axes=[0]), [], 11),
    (h.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"]),
     [nh.from_array(_i(v), n) for v, n in (([8, 1], "s"), ([0, 10], "e"), ([3, 2], "a"), ([-2, 3], "st"))], 17),
    (h.make_node("Slice", ["x", "s", "e"], ["y"]), [nh.from_array(_i([-1]), "s"), nh.from_array(_i([-100]), "e")], 17),
    (h.make_node("Gather", ["x", "i"], ["y"], axis=1), [nh.from_array(_i([[2, -1], [0, 0]]), "i")], 17),
    (h.make_node("Expand", ["x", "s"], ["y"]), [nh.from_array(_i([2, 1, 1, 1, 1]), "s")], 17),
    (h.make_node("Tile", ["x", "r"], ["y"]), [nh.from_array(_i([1, 2, 1, 1]), "r")], 17),
    (h.make_node("Pad", ["x", "p"], ["y"], mode="reflect"), [nh.from_array(_i([0, 0, 1, 2, 0, 0, 2, 1]), "p")], 17),
    (h.make_node("Pad", ["x", "p"], ["y"], mode="edge"), [nh.from_array(_i([0, 0, 1, 2, 0, 0, 2, 1]), "p")], 17),
    (h.make_node("Pad", ["x", "p", "v"], ["y"]),
     [nh.from_array(_i([0, 1, 1, 0, 0, 2, 0, 1]), "p"), nh.from_array(np.float32(0.5), "v")], 17),
    (h.make_node("Shape", ["x"], ["y"], start=1, end=-1), [], 17),
    (h.make_node("Size", ["x"], ["y"]), [], 17),
    (h.make_node("Trilu", ["x", "k"], ["y"], upper=0), [nh.from_array(np.int64(1), "k")], 17),
    (h.make_node("Clip", ["x", "lo", "hi"], ["y"]),
     [nh.from_array(np.float32(-0.5), "lo"), nh.from_array(np.float32(0.3), "hi")], 17),
    (h.make_node("Clip", ["x"], ["y"], min=-0.2, max=0.4), [], 6),
])
def test_layout_ops(node, inits, opset):
    _same(_model(node, {"x": X4}, inits, opset=opset), {"x": X4})


def test_squeeze():
    x = _x(2, 1, 5, 1)
    _same(_model(h.make_node("Squeeze", ["x", "a"], ["y"]), {"x": x}, [nh.from_array(_i([1, -1]), "a")]), {"x": x})
    _same(_model(h.make_node("Squeeze", ["x"], ["y"]), {"x": x}, opset=11), {"x": x})


@pytest.mark.parametrize("opset,kwargs,inputs", [
    (11, {"split": [1, 2]}, ["x"]), (13, {}, ["x", "s"]), (18, {"num_outputs": 2}, ["x"]),
])
def test_split(opset, kwargs, inputs):
    node = h.make_node("Split", inputs, ["a", "b"], axis=1, **kwargs)
    inits = [nh.from_array(_i([2, 1]), "s")] if "s" in inputs else []
    _same(_model(node, {"x": X4}, inits, opset=opset, outputs=2), {"x": X4})


def test_concat_and_constant_of_shape():
    shape = h.make_node("Shape", ["x"], ["s"])
    fill = h.make_node("ConstantOfShape", ["s"], ["z"], value=nh.from_array(np.array([2.0], np.float32)))
    cat = h.make_node("Concat", ["x", "z"], ["y"], axis=1)
    graph = h.make_graph([shape, fill, cat], "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 9, 10])],
                         [h.make_empty_tensor_value_info("y")])
    _same(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), {"x": X4})


@pytest.mark.parametrize("attrs,scales,sizes", [
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, [1, 1, 2, 2], None),
    ({"mode": "nearest"}, [1, 1, 2, 3], None),
    ({"mode": "linear"}, [1, 1, 2, 2], None),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [2, 3, 5, 7]),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, None, [2, 3, 18, 5]),
    ({"mode": "cubic"}, [1, 1, 2, 2], None),
])
def test_resize(attrs, scales, sizes):
    inits = [nh.from_array(np.array(scales, np.float32), "sc")] if scales else [nh.from_array(_i(sizes), "sz")]
    node = h.make_node("Resize", ["x", "", "sc" if scales else "", "" if scales else "sz"], ["y"], **attrs)
    _same(_model(node, {"x": X4}, inits), {"x": X4}, atol=1e-4)


def test_linear_ops():
    a, w, c = _x(4, 6), _x(5, 6), _x(5)
    gemm = h.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)
    _same(_model(gemm, {"a": a}, [nh.from_array(w, "w"), nh.from_array(c, "c")]), {"a": a})
    x3 = _x(2, 4, 6)
    _same(_model(h.make_node("MatMul", ["x", "w"], ["y"]), {"x": x3}, [nh.from_array(w.T.copy(), "w")]), {"x": x3})


def test_contrib_ops():
    x, skip = _x(2, 5, 8), _x(2, 5, 8)
    g, b = _x(8), _x(8)
    inits = [nh.from_array(g, "g"), nh.from_array(b, "b")]
    node = h.make_node("SkipLayerNormalization", ["x", "s", "g", "b"], ["y"], domain=ops.MS, epsilon=1e-5)
    _same(_model(node, {"x": x, "s": skip}, inits, ms=True), {"x": x, "s": skip}, atol=1e-4)
    for op_type in ("BiasGelu", "FastGelu"):
        node = h.make_node(op_type, ["x", "b"], ["y"], domain=ops.MS)
        _same(_model(node, {"x": x}, inits[1:], ms=True), {"x": x}, atol=1e-4)
    w, bias = _x(8, 24), _x(24)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    node = h.make_node("Attention", ["x", "w", "bias", "m"], ["y"], domain=ops.MS, num_heads=2)
    _same(_model(node, {"x": x, "m": mask}, [nh.from_array(w, "w"), nh.from_array(bias, "bias")], ms=True),
          {"x": x, "m": mask}, atol=1e-4)
    q, k, v = _x(2, 5, 8), _x(2, 6, 8), _x(2, 6, 8)
    node = h.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain=ops.MS, num_heads=4)
    _same(_model(node, {"q": q, "k": k, "v": v}, ms=True), {"q": q, "k": k, "v": v}, atol=1e-4)


RNN_CASES = [
    ("LSTM", "forward", {}), ("LSTM", "reverse", {"clip": 0.8}), ("LSTM", "bidirectional", {"states": True}),
    ("LSTM", "bidirectional", {"peepholes": True, "lengths": True, "states": True}),
    ("GRU", "forward", {"clip": 0.5}), ("GRU", "bidirectional", {"linear_before_reset": 1, "states": True}),
    ("GRU", "reverse", {"lengths": True}),
    ("RNN", "forward", {"activations": ["Relu"], "clip": 0.7}), ("RNN", "bidirectional", {"lengths": True, "states": True}),
]


@pytest.mark.parametrize("op_type,direction,case", RNN_CASES)
def test_recurrent_ops(op_type, direction, case):
    gates, dirs, steps, batch, features, hidden = {"LSTM": 4, "GRU": 3, "RNN": 1}[op_type], 1, 5, 3, 4, 6
    dirs = 2 if direction == "bidirectional" else 1
    x = _x(steps, batch, features)
    inits = [nh.from_array(_x(dirs, gates * hidden, features) * 0.5, "w"),
             nh.from_array(_x(dirs, gates * hidden, hidden) * 0.5, "r"), nh.from_array(_x(dirs, 2 * gates * hidden), "b")]
    inputs = ["x", "w", "r", "b", "", "", "", ""]
    if case.get("lengths"):
        inits.append(nh.from_array(np.array([5, 2, 4], np.int32), "lens"))
        inputs[4] = "lens"
    if case.get("states"):
        inits += [nh.from_array(_x(dirs, batch, hidden), "h0"), nh.from_array(_x(dirs, batch, hidden), "c0")]
        inputs[5] = "h0"
        if op_type == "LSTM":
            inputs[6] = "c0"
    if case.get("peepholes"):
        inits.append(nh.from_array(_x(dirs, 3 * hidden), "p"))
        inputs[7] = "p"
    while not inputs[-1]:
        inputs.pop()
    attrs = {k: v for k, v in case.items() if k in ("clip", "linear_before_reset", "activations")}
    if "activations" in attrs:
        attrs["activations"] = attrs["activations"] * dirs
    outputs = ["y", "y_h", "y_c"][:3 if op_type == "LSTM" else 2]
    node = h.make_node(op_type, inputs, outputs, hidden_size=hidden, direction=direction, **attrs)
    _same(_model(node, {"x": x}, inits, outputs=len(outputs)), {"x": x}, atol=1e-5)


def test_every_op_with_a_pruning_rule_runs_or_is_named():
    """Every op type the pruning engine has a rule for has a torch function, but the attention variants that
    keep state between calls (declined by name, one line)."""
    declined = {"GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention",
                "DecoderMaskedMultiHeadAttention", "DecoderAttention"}
    registry = default_registry()
    missing = [(d, o) for (d, o) in registry._rules if not ops.supported(d, o) and o not in declined]
    assert not missing


def test_unsupported_op_declined_in_one_line():
    x = _x(2, 3)
    model = _model(h.make_node("Det", ["x"], ["y"]), {"x": x})
    assert unsupported_ops(model) == ["Det"]
    with pytest.raises(StudentError, match="Det") as info:
        Student(model)
    assert "\n" not in str(info.value)


EXAMPLES = ["resnet_tiny_dynamo", "mobilenetv2_tiny_ts_bn", "effnet_same_tiny_dynamo", "unet_tiny_ts",
            "c2f_tiny_chunk_ts", "tx_bert_ts_ortopt", "tx_llama_dynamo", "tx_vit_ts", "digits_resnet_bn", "crnn_tiny_ts",
            "crnn_tiny_dynamo"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_models_run_exactly(name):
    model = onnx.load(ROOT / "models" / f"{name}.onnx")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else (2 if k == 0 else 16) for k, d in enumerate(i.shape)]
        feeds[i.name] = (rng.integers(0, 2, shape).astype(np.int64) if "int" in i.type
                         else rng.random(shape).astype(np.float32))
    _same(model, feeds, atol=1e-4)


def test_frozen_weights_become_parameters_and_are_written_back():
    """Constant-node weights, fp16 initializers and BatchNorm scale/bias train; running statistics, shape vectors
    and scalars stay fixed; writing back keeps every tensor's name, dtype and the graph structure."""
    x = _x(2, 3, 8, 8)
    w16 = nh.from_array(_x(4, 3, 3, 3).astype(np.float16), "w16")
    cast = h.make_node("Cast", ["w16"], ["w"], to=T.FLOAT)
    conv = h.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1])
    cb = h.make_node("Constant", [], ["cb"], value=nh.from_array(_x(4), "cbv"))
    bn = h.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"])
    shape = h.make_node("Constant", [], ["shape"], value=nh.from_array(_i([0, -1]), "sv"))
    flat = h.make_node("Reshape", ["n", "shape"], ["f"])
    half = h.make_node("Constant", [], ["half"], value=nh.from_array(np.float32(0.5), "hv"))
    out = h.make_node("Mul", ["f", "half"], ["y"])
    inits = [w16] + [nh.from_array(a, n) for a, n in ((_x(4), "s"), (_x(4), "b"), (_x(4), "m"), (np.abs(_x(4)) + 1, "v"))]
    graph = h.make_graph([cast, cb, conv, bn, shape, flat, half, out], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 256])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    student = Student(model)
    assert sorted(student.slots) == ["b", "cb", "s", "w16"]
    _same(model, {"x": x}, atol=1e-3)
    with torch.no_grad():
        for p in student.params.values():
            p.add_(0.25)
        expected = student(torch.from_numpy(x))[0].numpy()
    written = write_back(model, student.weights())
    onnx.checker.check_model(written, full_check=True)
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in model.graph.node]
    assert {t.name: t.data_type for t in written.graph.initializer} == {t.name: t.data_type for t in model.graph.initializer}
    got = ort.InferenceSession(written.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, atol=2e-2)  # the fp16 weight is rounded when written
    assert nh.to_array(model.graph.initializer[0]).dtype == np.float16  # the input model is unchanged
    np.testing.assert_array_equal(nh.to_array(model.graph.initializer[1]), nh.to_array(inits[1]))


def test_shape_ops_make_their_tensors_on_the_input_device():
    """--device cuda: a Shape or Size output meets the (moved) initializers in Concat or Gather, so it must be
    made where its input lives. The meta device stands in for a GPU here."""
    x = torch.empty(2, 3, 5, device="meta")
    for name, attrs in (("Shape", {}), ("Shape", {"start": 1}), ("Size", {})):
        assert ops.OPS[("", name)]([x], attrs, 17).device.type == "meta"
