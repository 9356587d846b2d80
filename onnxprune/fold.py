"""Folds small constant expressions into initializers before the analysis.

Exporters often write a bias as Reshape(constant, [1, C, 1, 1]), scale weights with a Mul of two
constants, or Unsqueeze/Transpose a weight at run time. The op rules look for constants at their inputs,
so such expressions are computed once here (with onnx's reference evaluator) and replaced by their value.
The folded model computes exactly the same function. Folding is limited to deterministic default-domain
ops whose inputs are all constants, and to results no larger than their inputs (it never inflates a model).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import DEFAULT_DOMAINS, drop_unused

FOLDABLE = {
    "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Flatten", "Concat", "Add", "Sub", "Mul", "Div",
    "Neg", "Sqrt", "Reciprocal", "Pow", "Gather", "Slice",
}
MAX_ELEMENTS = 1 << 24


def fold_constants(model: onnx.ModelProto) -> int:
    """Fold in place; returns the number of nodes folded."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and len(node.attribute) == 1:
            if node.attribute[0].name == "value":
                values[node.output[0]] = node.attribute[0].t
    outputs = {vi.name for vi in graph.output}
    opset = [o for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    folded, kept_nodes = 0, []
    for node in graph.node:
        inputs = [n for n in node.input if n]
        if (
            node.op_type not in FOLDABLE
            or node.domain not in DEFAULT_DOMAINS
            or not inputs
            or any(n not in values for n in inputs)
            or len(node.output) != 1
            or node.output[0] in outputs
        ):
            kept_nodes.append(node)
            continue
        in_elements = sum(int(np.prod(values[n].dims)) for n in inputs)
        try:
            feeds = {n: numpy_helper.to_array(values[n]) for n in inputs}
            single = helper.make_model(
                helper.make_graph([node], "fold", [helper.make_tensor_value_info(n, values[n].data_type, None) for n in inputs],
                                  [helper.make_empty_tensor_value_info(node.output[0])]),
                opset_imports=opset, ir_version=model.ir_version,
            )
            (result,) = ReferenceEvaluator(single).run(None, feeds)
        except Exception:  # anything the evaluator cannot do stays in the graph
            kept_nodes.append(node)
            continue
        result = np.asarray(result)
        if result.size > max(in_elements, 1) or result.size > MAX_ELEMENTS:
            kept_nodes.append(node)
            continue
        tensor = numpy_helper.from_array(result, node.output[0])
        graph.initializer.append(tensor)
        values[node.output[0]] = tensor
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(kept_nodes)
        drop_unused(model)
    return folded
