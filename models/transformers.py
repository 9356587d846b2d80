"""BERT-style encoders built in code, laid out the way PyTorch's TorchScript exporter writes them.

The graph mirrors ``torch.onnx.export(BertModel, ..., opset_version=17, dynamo=False)`` of a Hugging
Face ``BertModel`` without its pooler (checked against a real export of an equivalent module):

- inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 ``[batch, sequence]``;
  output ``last_hidden_state``: float ``[batch, sequence, hidden]``;
- embeddings: ``Gather`` from the word and token-type tables, ``Add``, position ids sliced from a
  ``[1, max_pos]`` int64 buffer up to ``Shape(input_ids)[1]``, ``Gather`` from the position table,
  ``Add``, ``LayerNormalization`` (epsilon 1e-12);
- extended mask: ``Unsqueeze`` (axis 1), ``Unsqueeze`` (axis 2), ``Cast`` to float, ``Sub(1, m)``,
  ``Mul(-10000)``;
- per layer, for each of Q/K/V: ``MatMul`` with a ``[hidden, hidden]`` weight (PyTorch's Linear weight
  transposed to ``[in, out]``, named ``onnx::MatMul_<n>`` as the exporter names it), ``Add(bias, x)``
  (bias first, as exported), ``Reshape`` to ``[B, S, H, D]`` and ``Transpose`` (``[0, 2, 1, 3]``; the
  key's ``[0, 2, 3, 1]``, the exporter's fusion of permute + transpose(-1, -2)); then
  ``MatMul`` QK^T, ``Div`` by sqrt(D), ``Add`` of the mask, ``Softmax(-1)``, ``MatMul`` V,
  ``Transpose`` back, ``Reshape`` to ``[B, S, hidden]``, the output projection ``MatMul`` + ``Add``,
  residual ``Add``, ``LayerNormalization``; the FFN ``MatMul`` + ``Add``, GELU written as
  ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)``, ``MatMul`` + ``Add``, residual ``Add``,
  ``LayerNormalization``.

The two ``Reshape`` targets are ``Constant`` nodes ``[0, 0, H, D]`` and ``[0, 0, hidden]`` by default;
``computed_reshape=True`` builds them as the exporter does for ``x.view(x.size()[:-1] + (H, D))``:
``Shape -> Gather(0) -> Unsqueeze`` and ``Shape -> Gather(1) -> Unsqueeze``, ``Concat`` with constants.

Small constants (scalars, axes, shape targets) are ``Constant`` nodes; weights are initializers with
seeded random values (BERT's N(0, 0.02) init; LayerNorm scales near 1 and shifts near 0, so that they
are not trivial). Opset 17, IR version 8.

    python -m models.transformers OUT.onnx [tiny|base]     # writes one model (default: tiny)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
BATCH = "batch"
SEQUENCE = "sequence"
LN_EPSILON = 1e-12
MASK_VALUE = -10000.0
INIT_STD = 0.02


class _Exporter:
    """Writes nodes with the exporter's names: ``/scope/Op``, ``/scope/Op_1``, outputs ``<node>_output_0``.

    Initializers are written straight into the model's graph (one copy of each weight in memory),
    so that building a 0.44 GB BERT-base costs little more than the model itself.
    """

    def __init__(self, graph: onnx.GraphProto, rng: np.random.Generator) -> None:
        self.graph = graph
        self.rng = rng
        self._counts: dict[str, int] = {}
        self._anon = 0  # numbering of the exporter's anonymous names (onnx::MatMul_<n>)

    def _node_name(self, scope: str, op: str) -> str:
        base = f"{scope}/{op}"
        k = self._counts.get(base, 0)
        self._counts[base] = k + 1
        return base if k == 0 else f"{base}_{k}"

    def op(self, scope: str, op: str, inputs: Sequence[str], output: Optional[str] = None, **attrs) -> str:
        name = self._node_name(scope, op)
        out = output or f"{name}_output_0"
        self.graph.node.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def const(self, scope: str, value) -> str:
        """A Constant node (scalars, axes, shape targets), as the exporter writes small constants."""
        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = self._node_name(scope, "Constant")
        out = f"{name}_output_0"
        self.graph.node.append(
            helper.make_node("Constant", [], [out], name=name, value=numpy_helper.from_array(arr, out))
        )
        return out

    def weight(self, name: str, arr: np.ndarray) -> str:
        arr = np.ascontiguousarray(arr)
        t = self.graph.initializer.add()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.raw_data = arr.tobytes()
        return name

    def anon_weight(self, kind: str, arr: np.ndarray) -> str:
        self._anon += 1
        return self.weight(f"onnx::{kind}_{self._anon}", arr)

    def normal(self, shape: Sequence[int], std: float = INIT_STD) -> np.ndarray:
        arr = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        arr *= np.float32(std)
        return arr

    # ------------------------------------------------------------ modules
    def linear(self, scope: str, prefix: str, x: str, fan_in: int, fan_out: int) -> str:
        """PyTorch's Linear on a 3-D input: MatMul with the [in, out] weight, then Add(bias, y)."""
        w = self.anon_weight("MatMul", self.normal((fan_in, fan_out)))
        b = self.weight(f"{prefix}.bias", self.normal((fan_out,)))
        y = self.op(scope, "MatMul", [x, w])
        return self.op(scope, "Add", [b, y])

    def layer_norm(self, scope: str, prefix: str, x: str, hidden: int, output: Optional[str] = None) -> str:
        gamma = self.weight(f"{prefix}.weight", 1.0 + self.normal((hidden,), 0.1))
        beta = self.weight(f"{prefix}.bias", self.normal((hidden,), 0.1))
        return self.op(scope, "LayerNormalization", [x, gamma, beta], output, axis=-1, epsilon=LN_EPSILON)

    def dims01(self, scope: str, x: str) -> list[str]:
        """[Shape(x)[0]], [Shape(x)[1]]: the exporter's view of ``x.size()[:2]``."""
        out = []
        for axis in (0, 1):
            shape = self.op(scope, "Shape", [x])
            dim = self.op(scope, "Gather", [shape, self.const(scope, np.array(axis, dtype=np.int64))], axis=0)
            out.append(self.op(scope, "Unsqueeze", [dim, self.const(scope, np.array([0], dtype=np.int64))]))
        return out

    def reshape(self, scope: str, x: str, tail: Sequence[int], computed: bool) -> str:
        if computed:
            parts = self.dims01(scope, x) + [self.const(scope, np.array([d], dtype=np.int64)) for d in tail]
            target = self.op(scope, "Concat", parts, axis=0)
        else:
            target = self.const(scope, np.array([0, 0, *tail], dtype=np.int64))
        return self.op(scope, "Reshape", [x, target], allowzero=0)


def _embeddings(e: _Exporter, hidden: int, vocab: int, max_pos: int, type_vocab: int) -> str:
    s = "/embeddings"
    # position_ids = self.position_ids[:, :seq_len]
    shape = e.op(s, "Shape", ["input_ids"])
    seq = e.op(s, "Gather", [shape, e.const(s, np.array(1, dtype=np.int64))], axis=0)
    starts = e.const(s, np.array([0], dtype=np.int64))
    ends = e.op(s, "Unsqueeze", [seq, e.const(s, np.array([0], dtype=np.int64))])
    axes = e.const(s, np.array([1], dtype=np.int64))
    steps = e.const(s, np.array([1], dtype=np.int64))
    position_ids = e.weight("embeddings.position_ids", np.arange(max_pos, dtype=np.int64)[None, :])
    positions = e.op(s, "Slice", [position_ids, starts, ends, axes, steps])

    words = e.weight("embeddings.word_embeddings.weight", e.normal((vocab, hidden)))
    types = e.weight("embeddings.token_type_embeddings.weight", e.normal((type_vocab, hidden)))
    pos = e.weight("embeddings.position_embeddings.weight", e.normal((max_pos, hidden)))
    x = e.op(f"{s}/word_embeddings", "Gather", [words, "input_ids"])
    t = e.op(f"{s}/token_type_embeddings", "Gather", [types, "token_type_ids"])
    x = e.op(s, "Add", [x, t])
    p = e.op(f"{s}/position_embeddings", "Gather", [pos, positions])
    x = e.op(s, "Add", [x, p])
    return e.layer_norm(f"{s}/LayerNorm", "embeddings.LayerNorm", x, hidden)


def _extended_mask(e: _Exporter) -> str:
    """(1 - mask[:, None, None, :].float()) * -10000: [batch, 1, 1, sequence]."""
    m = e.op("", "Unsqueeze", ["attention_mask", e.const("", np.array([1], dtype=np.int64))])
    m = e.op("", "Unsqueeze", [m, e.const("", np.array([2], dtype=np.int64))])
    m = e.op("", "Cast", [m], to=TensorProto.FLOAT)
    m = e.op("", "Sub", [e.const("", np.array(1.0, dtype=np.float32)), m])
    return e.op("", "Mul", [m, e.const("", np.array(MASK_VALUE, dtype=np.float32))])


def _expanded_mask(e: _Exporter) -> str:
    """The mask of recent transformers releases: the [batch, 1, 1, sequence] padding mask, as bool, expanded to
    [batch, 1, sequence, sequence] (an Expand whose shape passes TorchScript's guard `Where(Equal(s, -1), 1, s)`),
    then `Where(mask, 0, finfo.min)`."""
    m = e.op("", "Cast", ["attention_mask"], to=TensorProto.BOOL)
    m = e.op("", "Unsqueeze", [m, e.const("", np.array([1, 2], dtype=np.int64))])
    shape = e.op("", "Shape", ["input_ids"])
    batch, seq = (e.op("", "Unsqueeze", [e.op("", "Gather", [shape, e.const("", np.array(i, dtype=np.int64))],
                                                axis=0), e.const("", np.array([0], dtype=np.int64))])
                  for i in (0, 1))
    target = e.op("", "Concat", [batch, e.const("", np.array([1], dtype=np.int64)), seq, seq], axis=0)
    unset = e.op("", "Equal", [target, e.const("", np.array(-1, dtype=np.int64))])
    target = e.op("", "Where", [unset, e.const("", np.array(1, dtype=np.int64)), target])
    m = e.op("", "Expand", [m, target])
    return e.op("", "Where", [m, e.const("", np.array(0.0, dtype=np.float32)),
                              e.const("", np.array(np.finfo(np.float32).min, dtype=np.float32))])


def _layer(e: _Exporter, i: int, x: str, mask: str, hidden: int, heads: int, ffn: int, computed: bool,
           output: Optional[str]) -> str:
    d = hidden // heads
    s, p = f"/encoder/layer.{i}", f"encoder.layer.{i}"
    sa, sp = f"{s}/attention/self", f"{p}.attention.self"

    def project(name: str, perm: list[int]) -> str:
        y = e.linear(f"{sa}/{name}", f"{sp}.{name}", x, hidden, hidden)
        y = e.reshape(sa, y, (heads, d), computed)
        return e.op(sa, "Transpose", [y], perm=perm)

    q = project("query", [0, 2, 1, 3])
    k = project("key", [0, 2, 3, 1])
    v = project("value", [0, 2, 1, 3])
    scores = e.op(sa, "MatMul", [q, k])
    scores = e.op(sa, "Div", [scores, e.const(sa, np.array(math.sqrt(d), dtype=np.float32))])
    scores = e.op(sa, "Add", [scores, mask])
    probs = e.op(sa, "Softmax", [scores], axis=-1)
    ctx = e.op(sa, "MatMul", [probs, v])
    ctx = e.op(sa, "Transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = e.reshape(sa, ctx, (hidden,), computed)

    so, po = f"{s}/attention/output", f"{p}.attention.output"
    y = e.linear(f"{so}/dense", f"{po}.dense", ctx, hidden, hidden)
    y = e.op(so, "Add", [y, x])
    attn = e.layer_norm(f"{so}/LayerNorm", f"{po}.LayerNorm", y, hidden)

    si = f"{s}/intermediate"
    h = e.linear(f"{si}/dense", f"{p}.intermediate.dense", attn, hidden, ffn)
    sg = f"{si}/intermediate_act_fn"
    erf = e.op(sg, "Erf", [e.op(sg, "Div", [h, e.const(sg, np.array(math.sqrt(2.0), dtype=np.float32))])])
    erf = e.op(sg, "Add", [erf, e.const(sg, np.array(1.0, dtype=np.float32))])
    h = e.op(sg, "Mul", [e.op(sg, "Mul", [h, erf]), e.const(sg, np.array(0.5, dtype=np.float32))])

    sout = f"{s}/output"
    y = e.linear(f"{sout}/dense", f"{p}.output.dense", h, ffn, hidden)
    y = e.op(sout, "Add", [y, attn])
    return e.layer_norm(f"{sout}/LayerNorm", f"{p}.output.LayerNorm", y, hidden, output)


def bert(
    layers: int,
    hidden: int,
    heads: int,
    ffn: int,
    vocab: int,
    max_pos: int = 512,
    computed_reshape: bool = False,
    *,
    expanded_mask: bool = False,
    type_vocab: int = 2,
    seed: int = 0,
    name: Optional[str] = None,
) -> onnx.ModelProto:
    """A BERT encoder (no pooler) as PyTorch exports it; see the module docstring for the graph.
    `expanded_mask`: the attention mask as recent transformers releases build it (see _expanded_mask)."""
    if layers < 1 or hidden < 1 or heads < 1 or ffn < 1 or vocab < 1 or max_pos < 1:
        raise ValueError("layers, hidden, heads, ffn, vocab and max_pos must be positive")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    model = helper.make_model(
        helper.make_graph(
            [], name or f"bert_l{layers}_h{hidden}",
            [helper.make_tensor_value_info(n, TensorProto.INT64, [BATCH, SEQUENCE])
             for n in ("input_ids", "attention_mask", "token_type_ids")],
            [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [BATCH, SEQUENCE, hidden])],
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="onnxprune-models",
    )
    e = _Exporter(model.graph, np.random.default_rng(seed))
    x = _embeddings(e, hidden, vocab, max_pos, type_vocab)
    mask = _expanded_mask(e) if expanded_mask else _extended_mask(e)
    for i in range(layers):
        x = _layer(e, i, x, mask, hidden, heads, ffn, computed_reshape,
                   "last_hidden_state" if i == layers - 1 else None)
    return model


def bert_tiny(computed_reshape: bool = False) -> onnx.ModelProto:
    """2 layers, hidden 64, 4 heads, FFN 128, vocabulary 100: about 0.1M parameters, < 1 MB."""
    return bert(2, 64, 4, 128, 100, computed_reshape=computed_reshape, name="bert_tiny")


def bert_base(computed_reshape: bool = False) -> onnx.ModelProto:
    """BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30522: ~109M parameters, ~0.44 GB."""
    return bert(12, 768, 12, 3072, 30522, computed_reshape=computed_reshape, name="bert_base")


def param_count(model: onnx.ModelProto) -> int:
    """Float parameters of the model's initializers (the int64 position ids buffer is not counted)."""
    return sum(
        int(np.prod(t.dims)) for t in model.graph.initializer
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    )


BUILDERS = {"tiny": bert_tiny, "base": bert_base}


def main(argv: Sequence[str]) -> int:
    if not argv or len(argv) > 2 or argv[-1] not in BUILDERS and len(argv) == 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    model = BUILDERS[argv[1] if len(argv) == 2 else "tiny"]()
    onnx.save(model, str(Path(argv[0])))
    print(f"{argv[0]}: {param_count(model):,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
