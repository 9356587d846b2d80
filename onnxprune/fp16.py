"""A float32 model as float16 inside, with its inputs and outputs kept float32 (works on a copy).

- float32 initializers, Constant tensors (value, value_float, value_floats) and ConstantOfShape fill values
  become float16, clipped to float16's finite range (a -3.4e38 attention mask would turn into -inf, and
  -inf * 0 into NaN);
- Cast nodes whose `to` is float32 cast to float16 instead;
- each float32 graph input gets a Cast to float16 behind it, each float32 graph output a Cast back to float32
  in front of it, so the model's I/O names, types and shapes do not change;
- float32 value_info entries are retyped to float16.
Tensors that an op needs in float32 whatever its other inputs are (Resize's and Upsample's scales) are left alone.
Subgraphs (If/Loop/Scan bodies) are not converted: such a model raises OptionError.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import OptionError

FLOAT32_ONLY = {("Resize", 2), ("Upsample", 1)}  # (op, input index) typed tensor(float) alone
FP16_MAX = float(np.finfo(np.float16).max)
CAST_SUFFIX = "_fp16"


def _half(array: np.ndarray) -> np.ndarray:
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)


def _half_tensor(tensor: TensorProto) -> TensorProto:
    out = numpy_helper.from_array(_half(numpy_helper.to_array(tensor)), tensor.name)
    return out


def _unique(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of `model` with the same inputs and outputs (see the module docstring); `model` is untouched."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise OptionError(f"{graph.name or 'model'}: float16 conversion does not handle If/Loop/Scan bodies")
    keep32 = {n.input[i] for n in graph.node for op, i in FLOAT32_ONLY if n.op_type == op and len(n.input) > i}
    for k, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep32:
            graph.initializer[k].CopyFrom(_half_tensor(init))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type in ("Constant", "ConstantOfShape") and attr.type == onnx.AttributeProto.TENSOR \
                    and attr.t.data_type == TensorProto.FLOAT and not set(node.output) & keep32:
                attr.t.CopyFrom(_half_tensor(attr.t))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
        if node.op_type == "Constant" and not set(node.output) & keep32:
            for k, attr in enumerate(node.attribute):
                if attr.name in ("value_float", "value_floats"):
                    values = [attr.f] if attr.name == "value_float" else list(attr.floats)
                    array = _half(np.asarray(values if attr.name == "value_floats" else values[0], np.float32))
                    node.attribute[k].CopyFrom(helper.make_attribute("value", numpy_helper.from_array(array)))
    for vi in graph.value_info:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT and vi.name not in keep32:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | \
        {i.name for i in graph.initializer}
    casts_in, casts_out = [], []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT or inp.name in {i.name for i in graph.initializer}:
            continue
        half = _unique(inp.name + CAST_SUFFIX, taken)
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == inp.name and (node.op_type, k) not in FLOAT32_ONLY:
                    node.input[k] = half
        casts_in.append(helper.make_node("Cast", [inp.name], [half], name=_unique(f"cast_in_{inp.name}", taken),
                                         to=TensorProto.FLOAT16))
    for outp in graph.output:
        if outp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = _unique(outp.name + CAST_SUFFIX, taken)
        for node in graph.node:
            for k, name in enumerate(node.output):
                if name == outp.name:
                    node.output[k] = half
            for k, name in enumerate(node.input):
                if name == outp.name:
                    node.input[k] = half
        casts_out.append(helper.make_node("Cast", [half], [outp.name], name=_unique(f"cast_out_{outp.name}", taken),
                                          to=TensorProto.FLOAT))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def check_float16(fp32, fp16, feeds: list, min_cosine: float = 0.99,
                  providers: Sequence = ("CPUExecutionProvider",)) -> float:
    """The lowest cosine between the outputs of `fp32` and `fp16` (ModelProtos or paths) on `feeds`, run by
    onnxruntime on `providers`; OptionError below `min_cosine`: a conversion that changed what the model computes
    must not be timed."""
    from .session import source_label
    from .verify import compare

    report = compare(fp32, fp16, feeds, providers=providers)
    worst = min((o.cosine for o in report.outputs if o.cosine is not None), default=float("nan"))
    if not worst >= min_cosine:
        raise OptionError(f"{source_label(fp32)}: the float16 copy's outputs differ from float32 "
                          f"(cosine {worst:.4f} < {min_cosine}); not timed")
    return float(worst)
