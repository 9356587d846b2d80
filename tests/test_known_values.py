"""known_values (onnxprune/deps/ops/known.py): which entries of a computed int vector are the same for every input."""

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxprune.deps.context import Context
from onnxprune.deps.ops.known import known_values
from onnxprune.graph import Graph


def _context(nodes, inits, shapes=None) -> Context:
    graph = h.make_graph(nodes, "k", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", 8])],
                         [h.make_tensor_value_info("out", T.INT64, [None])],
                         [nh.from_array(np.asarray(v, np.int64), n) for n, v in inits.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return Context(Graph(model, shapes))


def test_dims_of_an_activation_are_never_known_even_when_pinned_or_static():
    ctx = _context([h.make_node("Shape", ["x"], ["s"]), h.make_node("Identity", ["s"], ["out"])], {},
                   shapes={"x": [1, 3, 5, 8]})
    values, known = known_values(ctx, "out")
    assert values.shape == (4,) and not known.any()


def test_zeros_survive_the_moves_of_torch_pad_order_and_arithmetic_on_unknowns_stays_unknown():
    """pads = Reshape(Transpose(Slice(Reshape(Concat([H - 1, H - 1], zeros(8 - 2)), [-1, 2]), reversed)), [-1])"""
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "two"], ["hh"], axis=0),
        h.make_node("Sub", ["hh", "one"], ["p"]),
        h.make_node("Concat", ["p", "p"], ["listed"], axis=0),
        h.make_node("Shape", ["listed"], ["n"]),
        h.make_node("Sub", ["eight", "n"], ["rest"]),
        h.make_node("ConstantOfShape", ["rest"], ["zeros"], value=nh.from_array(np.zeros(1, np.int64))),
        h.make_node("Concat", ["listed", "zeros"], ["flat"], axis=0),
        h.make_node("Reshape", ["flat", "pairs"], ["p2"]),
        h.make_node("Slice", ["p2", "minus1", "far", "zero", "minus1"], ["rev"]),
        h.make_node("Transpose", ["rev"], ["t"], perm=[1, 0]),
        h.make_node("Reshape", ["t", "minus1"], ["out"]),
    ]
    inits = {"two": [2], "one": [1], "eight": [8], "pairs": [-1, 2], "minus1": [-1], "far": [-(2**63) + 1],
             "zero": [0]}
    values, known = known_values(_context(nodes, inits), "out")
    # F.pad order [H_begin, H_end, 0...] reversed per pair into ONNX's [N, C, H, W begins, N, C, H, W ends]
    assert known.tolist() == [True, True, True, False, True, True, True, False]
    assert values[known].tolist() == [0, 0, 0, 0, 0, 0]


def test_integer_division_truncates_toward_zero_as_onnx_does():
    nodes = [h.make_node("Div", ["a", "b"], ["out"])]
    values, known = known_values(_context(nodes, {"a": [-7, 7, -8], "b": [2, -2, 4]}), "out")
    assert known.all() and values.tolist() == [-3, -3, -2]
