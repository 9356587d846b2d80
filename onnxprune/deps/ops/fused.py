"""onnxruntime's fused transformer ops (domain com.microsoft), as its transformer optimizer writes them.

- BiasGelu(A, bias), FastGelu(X, bias?): GELU of A + bias, element by element. With the channels on the
  bias axis (the last one) they pass through like an Add with a per-channel constant followed by Gelu:
  the constant bias is sliced with the channels (role "param"). Gelu and QuickGelu are plain activations.
- SkipLayerNormalization / SkipSimplifiedLayerNormalization: LayerNorm (RMSNorm) of input + skip (+ bias)
  over the last axis, the hidden size: the channels it sees are normalized together and are blocked.
- Attention: packs the Q, K and V projections of every head into one weight and computes the heads
  inside; MultiHeadAttention and the other fused attention ops split their inputs into heads internally
  (num_heads attribute). Neither is followed: the head count would have to change with the packed weight.
  The reason is reported on the channels they read, and on the heads of Attention's fused weight, so that
  `onnxprune inspect` tells why the heads of an optimized model do not prune.
"""

from __future__ import annotations

from ...graph import attr
from ..layout import Seg
from ..rules import OpRule
from .elementwise import elementwise_rule, unary_rule

DOMAIN = "com.microsoft"
UNFUSE = (
    "unfuse the model (export it without onnxruntime's transformer optimizations) to prune heads"
)
ATTENTION_REASON = f"com.microsoft %s packs heads in a fused weight; {UNFUSE}"
MHA_REASON = f"com.microsoft %s splits its inputs into heads internally; {UNFUSE}"
SKIP_LN_REASON = "com.microsoft %s normalizes over the channel axis (the hidden size)"


def _bias_gelu(node, ctx) -> None:
    """GELU(input + bias): an element-wise Add (a constant bias of the channels' size is sliced with them),
    then an activation."""
    if len(node.input) < 2 or not node.input[1]:
        unary_rule(node, ctx)
    else:
        elementwise_rule(node, ctx)


def _skip_layer_norm(node, ctx) -> None:
    reason = SKIP_LN_REASON % node.op_type
    ctx.block_tracked_inputs(node, reason)


def _attention(node, ctx) -> None:
    reason = ATTENTION_REASON % node.op_type
    ctx.block_tracked_inputs(node, reason)
    weight = node.input[1] if len(node.input) > 1 else ""
    shape = ctx.graph.const_shape(weight) if weight else None
    heads = int(attr(node, "num_heads", 0))
    sizes = attr(node, "qkv_hidden_sizes", None)
    if shape is None or len(shape) != 2 or heads < 1 or shape[1] % (3 * heads) or (sizes and len(set(sizes)) > 1):
        return
    # The heads become a group of the report, blocked with the reason (nothing of it is ever sliced):
    # the weight's columns are [Q | K | V], each `heads` blocks of head_size.
    space = ctx.new_layout(heads, node)[0].space
    packed = (Seg(space, shape[1] // (3 * heads)),) * 3
    ctx.block(packed, node, reason)
    ctx.param(node, 1, 1, packed, "out")


def _multi_head_attention(node, ctx) -> None:
    ctx.block_tracked_inputs(node, MHA_REASON % node.op_type)


RULES = [
    OpRule(("BiasGelu", "FastGelu"), _bias_gelu, domain=DOMAIN),
    OpRule(("Gelu", "QuickGelu"), unary_rule, domain=DOMAIN),
    OpRule(("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"), _skip_layer_norm, domain=DOMAIN),
    OpRule(("Attention",), _attention, domain=DOMAIN),
    OpRule(
        ("MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention",
         "DecoderMaskedMultiHeadAttention", "DecoderAttention"),
        _multi_head_attention, domain=DOMAIN,
    ),
]
