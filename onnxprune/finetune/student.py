"""The pruned ONNX graph as a trainable torch module, and its trained weights written back into the graph.

`Student(model)` runs the graph node by node with the torch functions of ops.py. Every float tensor that
the export froze into the graph and that is read as a weight (an initializer, a Constant node's value, an
fp16 tensor) becomes an `nn.Parameter`; everything else (shape vectors, BatchNorm running statistics, Resize
scales, scalar constants) stays fixed. `write_back(model, student)` copies the parameters into the same
initializers and Constant nodes, in their original dtypes: the graph structure never changes, so the
written model keeps its inputs, outputs and opset by construction.

The student runs BatchNormalization with its stored statistics (inference semantics) and half-precision
tensors in float32.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from . import ops
from .ops import UnsupportedOp

# Input slots that hold weights, per op: a float constant read only through these slots is trained.
WEIGHT_SLOTS = {
    ("", "Conv"): (1, 2), ("", "ConvTranspose"): (1, 2), ("", "Gemm"): (0, 1, 2), ("", "MatMul"): (0, 1),
    ("", "BatchNormalization"): (1, 2), ("", "InstanceNormalization"): (1, 2),
    ("", "LayerNormalization"): (1, 2), ("", "PRelu"): (1,), ("", "Gather"): (0,),
    ("", "LSTM"): (1, 2, 3, 7), ("", "GRU"): (1, 2, 3), ("", "RNN"): (1, 2, 3),
    ("", "Add"): (0, 1), ("", "Sub"): (0, 1), ("", "Mul"): (0, 1), ("", "Div"): (0, 1),
    (ops.MS, "SkipLayerNormalization"): (2, 3, 4), (ops.MS, "SkipSimplifiedLayerNormalization"): (2, 3),
    (ops.MS, "Attention"): (1, 2), (ops.MS, "MultiHeadAttention"): (3,), (ops.MS, "BiasGelu"): (1,),
    (ops.MS, "FastGelu"): (1,), (ops.MS, "EmbedLayerNormalization"): (2, 3, 4, 5, 6),
}
# Ops that pass a weight on unchanged in value (slot 0): the weight behind them is still a weight.
PASS_THROUGH = {"Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)


class StudentError(Exception):
    """The graph cannot become a torch module (an op the student does not run); one line, naming the op."""


@dataclass
class _Node:
    domain: str
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Op types of `model` the student cannot run, in graph order (empty when every node runs)."""
    seen = []
    for node in model.graph.node:
        key = (_domain(node), node.op_type)
        if node.op_type != "Constant" and not ops.supported(*key):
            label = node.op_type if not key[0] else f"{key[0]}::{node.op_type}"
            if label not in seen:
                seen.append(label)
    return seen


def _trainable(model: onnx.ModelProto, constants: dict[str, onnx.TensorProto]) -> set[str]:
    """The float constants that every reader takes as a weight (directly or through PASS_THROUGH ops)."""
    readers = defaultdict(list)
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            if name:
                readers[name].append((node, slot))
    graph_outputs = {o.name for o in model.graph.output}

    def weight_only(name: str, depth: int = 0) -> bool:
        if name in graph_outputs or not readers[name] or depth > 8:
            return False
        for node, slot in readers[name]:
            key = (_domain(node), node.op_type)
            if node.op_type in PASS_THROUGH and not key[0] and slot == 0:
                if node.op_type == "Cast" and node.attribute and node.attribute[0].i not in FLOATS:
                    return False
                if not all(weight_only(out, depth + 1) for out in node.output if out):
                    return False
            elif slot not in WEIGHT_SLOTS.get(key, ()):
                return False
        return True

    return {name for name, t in constants.items()
            if t.data_type in FLOATS and int(np.prod(t.dims)) >= 2 and weight_only(name)}


class Student(torch.nn.Module):
    """Runs `model` (a pruned ONNX graph) with torch; its float weights are parameters. The model is not kept."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        missing = unsupported_ops(model)
        if missing:
            raise StudentError(f"fine-tuning cannot run op(s) {', '.join(missing)}: the student module implements "
                               f"{len(ops.OPS)} ONNX op types, these are not among them")
        self.opset = default_opset(model)
        graph = model.graph
        constants: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                constants[node.output[0]] = _constant_tensor(node)
        trainable = _trainable(model, constants)
        self.slots: dict[str, str] = {}  # tensor name -> attribute name on this module
        self.params = torch.nn.ParameterDict()
        self.fixed: dict[str, torch.Tensor] = {}
        for i, (name, tensor) in enumerate(constants.items()):
            value = _to_torch(tensor)
            if name in trainable:
                self.slots[name] = f"p{i}"
                self.params[f"p{i}"] = torch.nn.Parameter(value)
            else:
                self.fixed[name] = value
        self.input_names = [i.name for i in graph.input if i.name not in constants]
        self.output_names = [o.name for o in graph.output]
        self.nodes = [
            _Node(_domain(n), n.op_type, n.name, list(n.input), list(n.output),
                  {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
            for n in graph.node if n.op_type != "Constant"
        ]
        self._last_use = _last_use(self.nodes, self.output_names)

    def to(self, *args, **kwargs):
        out = super().to(*args, **kwargs)
        device = next(iter(self.params.values())).device if len(self.params) else None
        if device is not None:
            self.fixed = {k: v.to(device) for k, v in self.fixed.items()}
        return out

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        env: dict[str, Optional[torch.Tensor]] = dict(self.fixed)
        for name, attr in self.slots.items():
            env[name] = self.params[attr]
        env.update(zip(self.input_names, inputs))
        env[""] = None
        for index, node in enumerate(self.nodes):
            args = [env[name] for name in node.inputs]
            try:
                out = ops.run(node.domain, node.op_type, args, node.attrs, self.opset, len(node.outputs))
            except UnsupportedOp as exc:
                raise StudentError(f"node {node.name or node.op_type!r}: {exc}") from None
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(node.outputs, outs):
                if name:
                    if value is None:
                        raise StudentError(f"node {node.name!r} ({node.op_type}): its output {name!r} is read, "
                                           f"and the student does not compute it")
                    env[name] = value
            for name in self._last_use.get(index, ()):
                env.pop(name, None)
        return [env[name] for name in self.output_names]

    def weights(self) -> dict[str, np.ndarray]:
        """The trained tensors by ONNX name, as float32 arrays."""
        return {name: self.params[attr].detach().cpu().numpy() for name, attr in self.slots.items()}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.params.values())


def _last_use(nodes: list[_Node], keep: list[str]) -> dict[int, list[str]]:
    """Intermediate tensors to drop after node i (their last reader), to bound memory on big graphs."""
    last = {}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            last[name] = i
    out = defaultdict(list)
    kept = set(keep)
    produced = {name for node in nodes for name in node.outputs}
    for name, i in last.items():
        if name in produced and name not in kept:
            out[i].append(name)
    return out


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto:
    attr = node.attribute[0]
    if attr.name == "value":
        return attr.t
    value = onnx.helper.get_attribute_value(attr)
    array = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}.get(attr.name)
    if array is None:
        raise StudentError(f"Constant node {node.name!r}: attribute {attr.name!r} is not supported")
    return numpy_helper.from_array(np.asarray(value, dtype=array), node.output[0])


def _to_torch(tensor: onnx.TensorProto) -> torch.Tensor:
    array = numpy_helper.to_array(tensor)
    if array.dtype in (np.float16, np.float64) or tensor.data_type == onnx.TensorProto.BFLOAT16:
        array = array.astype(np.float32)
    return torch.from_numpy(np.array(array, copy=True))


def write_back(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` whose initializers and Constant values named in `weights` hold them (original dtypes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)

    def replace(tensor: onnx.TensorProto, value: np.ndarray) -> None:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        if tuple(value.shape) != tuple(tensor.dims):
            raise AssertionError(f"{tensor.name}: trained shape {value.shape} != {tuple(tensor.dims)}")
        new = numpy_helper.from_array(value.astype(dtype), tensor.name)
        if tensor.data_type == onnx.TensorProto.BFLOAT16:
            new = onnx.helper.make_tensor(tensor.name, tensor.data_type, tensor.dims, value.reshape(-1).tolist())
        tensor.CopyFrom(new)

    for tensor in out.graph.initializer:
        if tensor.name in weights:
            replace(tensor, weights[tensor.name])
    for node in out.graph.node:
        if node.op_type == "Constant" and node.output[0] in weights:
            attr = node.attribute[0]
            if attr.name != "value":
                raise AssertionError(f"Constant {node.name}: only 'value' constants are trained")
            replace(attr.t, weights[node.output[0]])
    return out
