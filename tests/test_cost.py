"""MAC and parameter counts against hand-computed numbers, and the --shape helpers."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxprune.cost import count_cost
from onnxprune.errors import OptionError
from onnxprune.inputs import default_input_shapes, parse_shape, parse_shapes


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=9)


def _w(name, shape, dtype=np.float32):
    return nh.from_array(np.ones(shape, dtype=dtype), name)


def _vi(name, dims, elem=T.FLOAT):
    return h.make_tensor_value_info(name, elem, dims)


# ---------------------------------------------------------------------------------------------------------------
# MACs


def test_conv_macs():
    #   x[1,3,8,8] -Conv(W[4,3,3,3], pad 1)-> y[1,4,8,8]
    m = _model([h.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1], name="conv")],
               [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], [_w("W", (4, 3, 3, 3))])
    r = count_cost(m)
    assert r.per_node["conv"].macs == 1 * 4 * 8 * 8 * 3 * 3 * 3  # N*Cout*H*W*Cin*k*k = 6912
    assert r.macs == 6912
    assert r.params == 4 * 3 * 3 * 3
    assert r.per_node["conv"].params == 108
    assert not r.unknown_dims


def test_grouped_and_strided_conv_macs():
    # x[2,4,9,9] -Conv(W[6,2,3,3], group 2, stride 2)-> y[2,6,4,4]: MACs = 2*6*16 * (4/2)*9
    m = _model([h.make_node("Conv", ["x", "W", "B"], ["y"], group=2, strides=[2, 2], name="g")],
               [_vi("x", [2, 4, 9, 9])], [_vi("y", None)], [_w("W", (6, 2, 3, 3)), _w("B", (6,))])
    r = count_cost(m)
    assert r.macs == 2 * 6 * 4 * 4 * 2 * 9 == 3456
    assert r.params == 6 * 2 * 9 + 6


def test_depthwise_conv_macs():
    m = _model([h.make_node("Conv", ["x", "W"], ["y"], group=8, pads=[1, 1, 1, 1], name="dw")],
               [_vi("x", [1, 8, 5, 5])], [_vi("y", None)], [_w("W", (8, 1, 3, 3))])
    assert count_cost(m).macs == 8 * 25 * 9


def test_conv_transpose_macs():
    # x[1,4,5,5] -ConvTranspose(W[4,2,3,3], stride 2)-> y[1,2,11,11]; each input element feeds Cout/g*k*k outputs
    m = _model([h.make_node("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2], name="up")],
               [_vi("x", [1, 4, 5, 5])], [_vi("y", None)], [_w("W", (4, 2, 3, 3))])
    assert count_cost(m).macs == 1 * 4 * 5 * 5 * 2 * 3 * 3 == 1800


def test_grouped_conv_transpose_macs():
    # W[4,1,3,3] with group 2: Cout = 2, each input channel feeds 1 output channel
    m = _model([h.make_node("ConvTranspose", ["x", "W"], ["y"], group=2, name="up")],
               [_vi("x", [1, 4, 5, 5])], [_vi("y", None)], [_w("W", (4, 1, 3, 3))])
    assert count_cost(m).macs == 4 * 25 * 1 * 9 == 900


def test_gemm_trans_b_macs():
    # A[2,5] x B[3,5]^T -> [2,3]: M*K*N = 2*5*3
    m = _model([h.make_node("Gemm", ["a", "B", "C"], ["y"], transB=1, name="fc")],
               [_vi("a", [2, 5])], [_vi("y", None)], [_w("B", (3, 5)), _w("C", (3,))])
    r = count_cost(m)
    assert r.macs == 30
    assert r.params == 15 + 3


def test_gemm_trans_a_macs():
    m = _model([h.make_node("Gemm", ["a", "B"], ["y"], transA=1, name="fc")],
               [_vi("a", [5, 2])], [_vi("y", None)], [_w("B", (5, 7))])
    assert count_cost(m).macs == 2 * 5 * 7


def test_matmul_weight_macs():
    # [2,4,5] x [5,6] -> [2,4,6]: 2*4 rows, each 5*6
    m = _model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
               [_vi("x", [2, 4, 5])], [_vi("y", None)], [_w("W", (5, 6))])
    assert count_cost(m).macs == 2 * 4 * 5 * 6


def test_attention_matmul_activation_x_activation():
    # scores = Q[2,3,4,8] x K^T[2,3,8,4] -> [2,3,4,4]; ctx = scores x V[2,3,4,8] -> [2,3,4,8]
    nodes = [
        h.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        h.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
        h.make_node("Softmax", ["s"], ["p"], axis=-1),
        h.make_node("MatMul", ["p", "v"], ["ctx"], name="pv"),
    ]
    m = _model(nodes, [_vi("q", [2, 3, 4, 8]), _vi("k", [2, 3, 4, 8]), _vi("v", [2, 3, 4, 8])], [_vi("ctx", None)])
    r = count_cost(m)
    assert r.per_node["qk"].macs == 2 * 3 * 4 * 8 * 4
    assert r.per_node["pv"].macs == 2 * 3 * 4 * 4 * 8
    assert r.per_node["Softmax_2"].macs == 0
    assert r.params == 0


def test_matmul_broadcast_and_vector():
    nodes = [h.make_node("MatMul", ["a", "b"], ["y"], name="bc"), h.make_node("MatMul", ["v", "b2"], ["z"], name="vec")]
    m = _model(nodes,
               [_vi("a", [1, 3, 4, 8]), _vi("b", [2, 1, 8, 5]), _vi("v", [8]), _vi("b2", [8, 6])],
               [_vi("y", None), _vi("z", None)])
    r = count_cost(m)
    assert r.per_node["bc"].macs == 2 * 3 * 4 * 8 * 5
    assert r.per_node["vec"].macs == 8 * 6


def test_dynamic_batch_counts_as_one_unless_pinned():
    m = _model([h.make_node("Conv", ["x", "W"], ["y"], name="conv")],
               [_vi("x", ["N", 3, 6, 6])], [_vi("y", None)], [_w("W", (2, 3, 3, 3))])
    one = count_cost(m)
    assert one.macs == 2 * 4 * 4 * 27
    assert one.unknown_dims and any("'x'" in n for n in one.notes)
    assert one.input_shapes == {"x": [1, 3, 6, 6]}
    four = count_cost(m, {"x": [4, 3, 6, 6]})
    assert four.macs == 4 * one.macs
    assert not four.unknown_dims


def test_macs_through_reshape_with_pinned_batch():
    # Flatten -> Gemm: the Gemm's M comes from inference through the Flatten
    nodes = [h.make_node("Flatten", ["x"], ["f"]), h.make_node("Gemm", ["f", "W"], ["y"], transB=1, name="fc")]
    m = _model(nodes, [_vi("x", ["N", 2, 3])], [_vi("y", None)], [_w("W", (5, 6))])
    assert count_cost(m, {"x": [3, 2, 3]}).macs == 3 * 6 * 5


def test_unknown_shapes_are_noted_not_crashing():
    # the input states no shape: the Conv cannot be counted
    x = onnx.ValueInfoProto()
    x.name = "x"
    x.type.tensor_type.elem_type = T.FLOAT
    m = _model([h.make_node("Conv", ["x", "W"], ["y"], name="conv")], [x], [_vi("y", None)], [_w("W", (2, 3, 3, 3))])
    r = count_cost(m)
    assert r.macs == 0 and r.unknown_dims
    assert any("conv" in n for n in r.notes)
    assert r.params == 54


# ---------------------------------------------------------------------------------------------------------------
# Parameters


def test_params_shared_constant_node_fp16_and_ints():
    nodes = [
        h.make_node("Constant", [], ["cw"], value=nh.from_array(np.ones((4, 4), np.float32), "cw"), name="const"),
        h.make_node("MatMul", ["x", "W"], ["a"], name="m1"),
        h.make_node("MatMul", ["a", "W"], ["b"], name="m2"),  # the same W: counted once in the total
        h.make_node("MatMul", ["b", "cw"], ["c"], name="m3"),
        h.make_node("Cast", ["c"], ["c16"], to=T.FLOAT16),
        h.make_node("Mul", ["c16", "H"], ["d"], name="half"),
        h.make_node("Reshape", ["d", "shape"], ["y"], name="rs"),
    ]
    inits = [_w("W", (4, 4)), _w("H", (4,), np.float16), nh.from_array(np.array([2, 4], np.int64), "shape")]
    m = _model(nodes, [_vi("x", [2, 4])], [_vi("y", None, T.FLOAT16)], inits)
    r = count_cost(m)
    assert r.params == 16 + 16 + 4  # W once, the Constant node, the fp16 vector; the int64 shape is no parameter
    assert r.per_node["m1"].params == 16 and r.per_node["m2"].params == 16
    assert r.per_node["m3"].params == 16  # read through the Constant node
    assert r.per_node["rs"].params == 0
    assert "const" not in r.per_node
    assert r.macs == 3 * 2 * 4 * 4


def test_unnamed_and_duplicate_node_names_are_unique():
    nodes = [h.make_node("Relu", ["x"], ["a"]), h.make_node("Relu", ["a"], ["b"], name="r"),
             h.make_node("Relu", ["b"], ["y"], name="r")]
    r = count_cost(_model(nodes, [_vi("x", [1, 2])], [_vi("y", None)]))
    assert list(r.per_node) == ["Relu_0", "r", "r_2"]  # the scheme graph.Graph names nodes by


def test_to_dict_is_plain_data():
    m = _model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [_vi("x", [2, 3])], [_vi("y", None)],
               [_w("W", (3, 4))])
    d = count_cost(m).to_dict()
    assert d["macs"] == 24 and d["params"] == 12
    assert d["per_node"]["mm"] == {"op_type": "MatMul", "params": 12, "macs": 24}


# ---------------------------------------------------------------------------------------------------------------
# Shapes


def test_parse_shape_ok():
    assert parse_shape("input=1x3x224x224") == ("input", [1, 3, 224, 224])
    assert parse_shape(" ids = 2x128 ") == ("ids", [2, 128])
    assert parse_shape("in:0=4") == ("in:0", [4])
    assert parse_shapes(["a=1x2", "b=3"]) == {"a": [1, 2], "b": [3]}


@pytest.mark.parametrize("text", ["input", "=1x3", "input=", "input=1xx3", "input=1x-3", "input=0x3", "input=ax3"])
def test_parse_shape_bad(text):
    with pytest.raises(OptionError, match="bad shape"):
        parse_shape(text)


def test_parse_shapes_duplicate():
    with pytest.raises(OptionError, match="twice"):
        parse_shapes(["a=1", "a=2"])


def _dyn_model():
    return _model([h.make_node("Add", ["x", "m"], ["y"])],
                  [_vi("x", ["batch", 3, "seq"]), _vi("m", ["batch", 3, "seq"]), ],
                  [_vi("y", None)], [_w("bias", (3,))])


def test_default_input_shapes_fills_and_overrides():
    m = _dyn_model()
    assert default_input_shapes(m) == {"x": [1, 3, 1], "m": [1, 3, 1]}
    # the symbols "batch" and "seq" pinned through x apply to m as well
    assert default_input_shapes(m, {"x": [2, 3, 7]}) == {"x": [2, 3, 7], "m": [2, 3, 7]}


def test_default_input_shapes_errors():
    m = _dyn_model()
    with pytest.raises(OptionError, match="names no input.*'nope'.*inputs are 'x', 'm'"):
        default_input_shapes(m, {"nope": [1]})
    with pytest.raises(OptionError, match="rank 2"):
        default_input_shapes(m, {"x": [1, 3]})
    with pytest.raises(OptionError, match="dim 1 is fixed to 3"):
        default_input_shapes(m, {"x": [1, 4, 5]})


def test_initializer_listed_as_input_is_not_an_input():
    m = _model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [_vi("x", [2, 3]), _vi("W", [3, 4])],
               [_vi("y", None)], [_w("W", (3, 4))])
    assert default_input_shapes(m) == {"x": [2, 3]}
    assert count_cost(m).macs == 24


def test_dims_behind_shape_arithmetic():
    # torch's chunk: Slice(x, 0, (Shape(x)[1] + 1) / 2, axis 1) -> Conv; onnx's inference loses the sliced dims
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "one"], ["c"]),
        h.make_node("Add", ["c", "one"], ["c1"]),
        h.make_node("Div", ["c1", "two"], ["half"]),
        h.make_node("Slice", ["x", "zero", "half", "one"], ["lo"]),
        h.make_node("Conv", ["lo", "W"], ["y"], name="conv"),
    ]
    ints = [nh.from_array(np.array([v], np.int64), n) for n, v in (("zero", 0), ("one", 1), ("two", 2))]
    m = _model(nodes, [_vi("x", ["N", 8, 4, 4])], [_vi("y", None)], [*ints, _w("W", (4, 4, 1, 1))])
    r = count_cost(m, {"x": [2, 8, 4, 4]})
    assert r.per_node["conv"].macs == 2 * 4 * 16 * 4
    assert not r.unknown_dims


def test_fused_contrib_attention_counts_the_same_macs_as_the_unfused_graph():
    models = Path(__file__).resolve().parent.parent / "models"
    shapes = {"input_ids": [2, 16], "attention_mask": [2, 16], "token_type_ids": [2, 16]}
    unfused = count_cost(onnx.load(str(models / "tx_bert_ts.onnx")), shapes)
    fused = count_cost(onnx.load(str(models / "tx_bert_ts_ortopt.onnx")), shapes)  # com.microsoft Attention per layer
    assert fused.macs == unfused.macs > 0


def test_measuring_shapes_name_each_open_dim_once_and_keep_a_named_batch_at_1_everywhere():
    from onnxprune.inputs import counting_shapes

    graph = h.make_graph(
        [h.make_node("Add", ["ids", "mask"], ["s"]), h.make_node("Add", ["img", "img"], ["t"])], "g",
        [h.make_tensor_value_info("ids", T.FLOAT, ["batch", "seq"]),
         h.make_tensor_value_info("mask", T.FLOAT, ["batch", "seq"]),
         h.make_tensor_value_info("img", T.FLOAT, ["batch", 3, None, 8]),
         h.make_tensor_value_info("state", T.FLOAT, [2, "batch", 4])],  # the batch on axis 1 (an RNN state)
        [h.make_tensor_value_info("s", T.FLOAT, None), h.make_tensor_value_info("t", T.FLOAT, None)],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    shapes, notes = counting_shapes(model, {}, what="it is timed")
    assert shapes["state"] == [2, 1, 4] and shapes["ids"][0] == shapes["img"][0] == 1
    seq, height = shapes["ids"][1], shapes["img"][2]
    assert seq > 1 and height > 1 and shapes["mask"] == shapes["ids"]
    assert notes == [
        f"input 'ids': dynamic dims [1] not pinned: it is timed at generic sizes {seq}; pin real sizes with "
        "--shape ids=1x<seq>",
        f"input 'img': dynamic dims [2] not pinned: it is timed at generic sizes {height}; pin real sizes with "
        "--shape img=1x3x<dim2>x8",
    ]
    # pinning 'seq' through one input pins it for every input that names it
    assert counting_shapes(model, {"mask": [2, 5], "img": [1, 3, 4, 8]})[1] == []


def _torch_style_pad_net() -> onnx.ModelProto:
    """x[N, 3, 8, 8] -Pad(pads computed the way torch exports F.pad)-> Conv(4, 3x3) -> y[N, 4, 8, 8].

    onnx's inference cannot follow the pads through ConstantOfShape/Concat/Reshape/Slice/Transpose, so the Pad
    output and everything after it would have unknown dims without folding that arithmetic.
    """
    i64 = lambda name, values: nh.from_array(np.array(values, np.int64), name)  # noqa: E731
    nodes = [
        h.make_node("ConstantOfShape", ["four"], ["zeros"], value=nh.from_array(np.array([0], np.int64))),
        h.make_node("Concat", ["pad_hw", "zeros"], ["flat"], axis=0),
        h.make_node("Reshape", ["flat", "pairs"], ["pairs_2d"]),
        h.make_node("Slice", ["pairs_2d", "start", "end", "axis0", "step"], ["reversed"]),
        h.make_node("Transpose", ["reversed"], ["begin_end"], perm=[1, 0]),
        h.make_node("Reshape", ["begin_end", "minus1"], ["pads"]),
        h.make_node("Pad", ["x", "pads"], ["xp"]),
        h.make_node("Conv", ["xp", "W"], ["y"]),
    ]
    graph = h.make_graph(
        nodes, "torch_pad",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [i64("four", [4]), i64("pad_hw", [1, 1, 1, 1]), i64("pairs", [-1, 2]), i64("start", [-1]),
         i64("end", [-(2**62)]), i64("axis0", [0]), i64("step", [-1]), i64("minus1", [-1]),
         nh.from_array(np.ones((4, 3, 3, 3), np.float32), "W")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


def test_shape_arithmetic_is_folded_so_macs_are_exact():
    import onnxruntime as ort

    from onnxprune.shapes import infer_shapes

    model = _torch_style_pad_net()
    y = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.ones((2, 3, 8, 8), np.float32)})[0]
    assert y.shape == (2, 4, 8, 8)
    plain = onnx.shape_inference.infer_shapes(model, data_prop=True)
    assert not any(vi.name == "xp" and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
                   for vi in plain.graph.value_info)  # onnx alone does not know the padded size
    assert infer_shapes(model, {"x": [2, 3, 8, 8]}).dims("y") == (2, 4, 8, 8)
    report = count_cost(model, {"x": [2, 3, 8, 8]})
    assert report.macs == 2 * 4 * 8 * 8 * 3 * 3 * 3 and report.notes == []


def _dynamo_same_pad_net() -> onnx.ModelProto:
    """x[N, 3, H, W] -> Relu -Pad(0, 0, ph, pw, 0, 0, ph, pw)-> Conv(4, 3x3, stride 2) -> y, where for each of H, W
    p = (ceil(size / 2) - 1) * 2 + 3 - size, read with Shape(x, start, end) and computed in float (Ceil) the way
    the dynamo exporter writes timm's "same" padding (the pads here pad both sides by the whole amount)."""
    f32 = lambda name, v: nh.from_array(np.array(v, np.float32), name)  # noqa: E731
    i64 = lambda name, v: nh.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes, pieces = [h.make_node("Relu", ["x"], ["xr"])], []  # Shape of an activation, not of the input
    for axis in (2, 3):
        a = f"a{axis}_"
        nodes += [
            h.make_node("Shape", ["xr"], [a + "s"], start=axis, end=axis + 1),
            h.make_node("Cast", [a + "s"], [a + "f"], to=T.FLOAT),
            h.make_node("Div", [a + "f", "two_f"], [a + "half"]),
            h.make_node("Ceil", [a + "half"], [a + "c"]),
            h.make_node("Cast", [a + "c"], [a + "ci"], to=T.INT64),
            h.make_node("Mul", [a + "ci", "two"], [a + "m"]),
            h.make_node("Add", [a + "m", "one"], [a + "k"]),
            h.make_node("Sub", [a + "k", a + "s"], [a + "p"]),
        ]
        pieces.append(a + "p")
    nodes += [
        h.make_node("Concat", ["zeros", *pieces, "zeros", *pieces], ["pads"], axis=0),
        h.make_node("Pad", ["xr", "pads"], ["xp"]),
        h.make_node("Conv", ["xp", "W"], ["y"], strides=[2, 2]),
    ]
    graph = h.make_graph(
        nodes, "dynamo_pad", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4, "OH", "OW"])],
        [f32("two_f", 2.0), i64("two", [2]), i64("one", [1]), i64("zeros", [0, 0]),
         nh.from_array(np.ones((4, 3, 3, 3), np.float32), "W")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("size", [(8, 8), (9, 13)])
def test_pads_computed_in_float_from_shape_with_bounds_give_exact_macs(size):
    """The float steps (Cast, Div, Ceil) fold, and Shape's start/end are honoured while folding (onnx-graphsurgeon
    0.6 alone folds Shape(x, start, end) to the whole shape)."""
    import onnxruntime as ort

    model = _dynamo_same_pad_net()
    onnx.checker.check_model(model, full_check=True)
    x = np.ones((1, 3, *size), np.float32)
    out = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    report = count_cost(model, {"x": list(x.shape)})
    assert report.notes == []
    assert report.macs == out.shape[2] * out.shape[3] * 4 * 3 * 3 * 3


def test_quantized_weights_count_as_parameters_and_shape_constants_do_not():
    graph = h.make_graph(
        [h.make_node("DequantizeLinear", ["wq", "scale", "zero"], ["w"]),
         h.make_node("MatMul", ["x", "w"], ["m"]),
         h.make_node("Reshape", ["m", "shape"], ["y"])],
        "q", [h.make_tensor_value_info("x", T.FLOAT, [1, 8])], [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(np.ones((8, 4), np.int8), "wq"), nh.from_array(np.array(0.1, np.float32), "scale"),
         nh.from_array(np.array(0, np.int8), "zero"), nh.from_array(np.array([4, 1], np.int64), "shape")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    assert count_cost(model).params == 8 * 4 + 1 + 1


# ---------------------------------------------------------------------------------------------------------------
# The sizes prune and inspect work at where no dim is pinned


def test_generic_sizes_are_distinct_per_dim_name_and_never_1():
    from onnxprune.inputs import generic_input_shapes

    m = _model([h.make_node("Add", ["ids", "mask"], ["s"]), h.make_node("Relu", ["img"], ["t"])],
               [_vi("ids", ["batch", "seq"], T.INT64), _vi("mask", ["batch", "seq"], T.INT64),
                _vi("img", ["batch", 3, "?", "?"])],
               [_vi("s", None, T.INT64), _vi("t", None)])
    shapes = generic_input_shapes(m)
    batch, seq = shapes["ids"]
    assert shapes["mask"] == [batch, seq]  # one name, one size
    _, channels, height, width = shapes["img"]
    assert shapes["img"][0] == batch and channels == 3
    sizes = [batch, seq, height, width]
    assert len(set(sizes)) == 4 and min(sizes) > 1  # '?' is no name: the two image axes are two dims
    assert height % 32 == 0 and width % 32 == 0  # image axes: strided networks need multiples of their stride
    # a pinned name holds for every input that names it; what is left open stays generic
    pinned = generic_input_shapes(m, {"ids": [1, 128]})
    assert pinned["mask"] == [1, 128] and pinned["img"][0] == 1 and pinned["img"][2:] == [height, width]


def test_counting_shapes_batch_1_then_calibration_sizes_or_generic_ones_and_say_so():
    from onnxprune.inputs import counting_shapes, generic_input_shapes

    m = _model([h.make_node("Add", ["ids", "mask"], ["s"])],
               [_vi("ids", ["batch", "seq"], T.INT64), _vi("mask", ["batch", "seq"], T.INT64)],
               [_vi("s", None, T.INT64)])
    generic_seq = generic_input_shapes(m)["ids"][1]
    shapes, notes = counting_shapes(m)
    assert shapes == {"ids": [1, generic_seq], "mask": [1, generic_seq]}  # MACs per sample
    assert notes == [f"input 'ids': dynamic dims [1] not pinned: MACs counted at generic sizes {generic_seq}; "
                     f"pin real sizes with --shape ids=1x<seq>"]  # 'seq' once, though two inputs name it
    shapes, notes = counting_shapes(m, sample={"ids": [8, 40], "mask": [8, 40]})
    assert shapes == {"ids": [1, 40], "mask": [1, 40]}
    assert notes == ["input 'ids': dynamic dims [1] not pinned: MACs counted at the calibration data's sizes 40"]
    assert counting_shapes(m, {"ids": [2, 16]}) == ({"ids": [2, 16], "mask": [2, 16]}, [])


def test_unpinned_macs_are_the_macs_at_the_sizes_the_report_states():
    """MACs of a model whose dims nobody pinned are counted at the sizes the report names, never at 1 (a
    sequence of one token has no attention to speak of); pinning those sizes gives the same numbers."""
    import onnxprune
    from models import transformers

    model = transformers.bert(2, 32, 4, 48, 50, max_pos=32)
    unpinned = onnxprune.prune(model, ratio=0.5, round_to=1).report
    (seq,) = {dims[1] for dims in unpinned.input_shapes.values()}
    assert seq > 1 and all(dims[0] == 1 for dims in unpinned.input_shapes.values())
    assert any("generic sizes" in note for note in unpinned.notes)
    pinned = onnxprune.prune(model, ratio=0.5, round_to=1, shapes=unpinned.input_shapes).report
    assert (pinned.before.macs, pinned.after.macs) == (unpinned.before.macs, unpinned.after.macs)
    assert not any("generic sizes" in note for note in pinned.notes)
