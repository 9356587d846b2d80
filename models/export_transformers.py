"""Exports small random-weight transformers from PyTorch: the committed ``models/tx_*.onnx`` files.

Torch is needed only to run this script, never by onnxprune or its tests. Install the CPU build into
the project's virtualenv (plus onnxscript for the dynamo exporter) and run it from the repository root:

    .venv/bin/pip install torch==2.13.0 onnxscript
    .venv/bin/python -m models.export_transformers          # writes models/tx_*.onnx
    .venv/bin/python -m models.export_transformers OUT_DIR  # somewhere else

The modules are written here after the Hugging Face / timm implementations (no ``transformers``
package, no downloads); the weights are random and seeded, so every run writes the same graphs. Every
model has hidden size 32, 4 attention heads of 8 features (Llama: 2 key/value heads), an FFN of 48
neurons and 2 layers; every file is self-contained and far below 1 MB. Batch and sequence axes are
dynamic (``batch``, ``sequence``).

Each model goes through both exporters: ``*_ts.onnx`` from the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``, opset 17) and ``*_dynamo.onnx`` from the torch.export-based
exporter (``dynamo=True``, opset 18). Their graphs differ: TorchScript traces ``x.size()`` into
``Shape -> Gather`` chains, the dynamo exporter specializes static sizes into constants and shares one
``Concat`` shape between the layers. (The dynamo exporter's per-node stack traces are dropped: they hold
this checkout's paths.)

- ``tx_bert_*``   BERT encoder (``BertModel`` without pooler): word + position + token-type embeddings,
                  LayerNorm, extended attention mask ``(1 - mask[:, None, None, :]) * finfo.min``,
                  separate Q/K/V projections split into heads with ``x.view(x.size()[:-1] + (H, D))``,
                  erf GELU FFN, post-LayerNorm residuals.
                  Inputs ``input_ids``, ``attention_mask``, ``token_type_ids``; output ``last_hidden_state``.
- ``tx_gpt2_*``   GPT-2 causal decoder without KV cache: ``Conv1D`` layers (``addmm`` on ``x.view(-1, nx)``),
                  one fused ``c_attn`` split into Q/K/V with ``split(hidden, dim=2)``, the causal mask sliced
                  from a ``tril`` buffer and applied with ``torch.where``, GELU-tanh (``gelu_new``) FFN,
                  pre-LayerNorm, an LM head tied to the token embedding (``lm_head.weight = wte.weight``).
                  Input ``input_ids``; output ``logits``.
- ``tx_vit_*``    timm-style ViT: patch-embedding Conv (stride = patch), ``flatten(2).transpose(1, 2)``, a
                  class token ``expand``-ed to the batch and concatenated, a learned position embedding,
                  fused ``qkv`` reshaped to ``[B, N, 3, H, D]``, permuted and ``unbind``-ed, pre-LayerNorm
                  blocks, the class token through a classifier. Input ``pixel_values`` ``[batch, 3, 16, 16]``;
                  output ``logits``.
- ``tx_llama_*``  Llama decoder: RMSNorm, rotary position embeddings, grouped-query attention (4 query
                  heads, 2 key/value heads, HF's ``repeat_kv``: ``expand`` + ``reshape``), causal mask,
                  SwiGLU FFN ``down(silu(gate(x)) * up(x))``, untied LM head. Input ``input_ids``;
                  output ``logits``.
- ``tx_bert_ts_ortopt.onnx``  ``tx_bert_ts.onnx`` through onnxruntime's transformer optimizer
                  (``onnxruntime.transformers.optimizer``, opt_level 1): the com.microsoft fused ops
                  EmbedLayerNormalization, Attention, SkipLayerNormalization and BiasGelu.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.nn import functional as F

from models.export_torch import check_export

HERE = Path(__file__).resolve().parent
TS_OPSET = 17
DYNAMO_OPSET = 18

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 32, 4, 2, 48, 2
VOCAB, MAX_POS, TYPE_VOCAB = 50, 32, 2
IMAGE, PATCH, CLASSES = 16, 4, 10


# ------------------------------------------------------------------ BERT
class BertEmbeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, HIDDEN)
        self.position_embeddings = nn.Embedding(MAX_POS, HIDDEN)
        self.token_type_embeddings = nn.Embedding(TYPE_VOCAB, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(MAX_POS).expand((1, -1)), persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        position_ids = self.position_ids[:, : input_ids.size(1)]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(position_ids))


class BertSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head_dim = HIDDEN // HEADS
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size()[:-1] + (HEADS, self.head_dim)).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
        context = torch.matmul(scores.softmax(dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return context.view(context.size()[:-2] + (HIDDEN,))


class BertLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = BertSelfAttention()
        self.attention_output = nn.Linear(HIDDEN, HIDDEN)
        self.attention_norm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.intermediate = nn.Linear(HIDDEN, FFN)
        self.output = nn.Linear(FFN, HIDDEN)
        self.output_norm = nn.LayerNorm(HIDDEN, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(self.attention_output(self.attention(x, mask)) + x)
        return self.output_norm(self.output(F.gelu(self.intermediate(x))) + x)


class Bert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings()
        self.layers = nn.ModuleList(BertLayer() for _ in range(LAYERS))

    def forward(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x


# ------------------------------------------------------------------ GPT-2
class Conv1D(nn.Module):
    """GPT-2's linear layer: weight [in, out], ``addmm`` on the input flattened to 2-D."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_attn, self.c_proj = Conv1D(3 * HIDDEN, HIDDEN), Conv1D(HIDDEN, HIDDEN)
        causal = torch.tril(torch.ones((MAX_POS, MAX_POS), dtype=torch.bool)).view(1, 1, MAX_POS, MAX_POS)
        self.register_buffer("bias", causal, persistent=False)

    @staticmethod
    def split_heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size()[:-1] + (HEADS, HIDDEN // HEADS)).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(HIDDEN, dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        w = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5, dtype=q.dtype)
        q_len, k_len = q.size(-2), k.size(-2)
        causal = self.bias[:, :, k_len - q_len:k_len, :k_len]
        w = torch.where(causal, w, torch.full([], torch.finfo(w.dtype).min, dtype=w.dtype))
        a = torch.matmul(w.softmax(dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return self.c_proj(a.view(a.size()[:-2] + (HIDDEN,)))


class GPT2Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(HIDDEN), GPT2Attention(), nn.LayerNorm(HIDDEN)
        self.c_fc, self.c_proj = Conv1D(FFN, HIDDEN), Conv1D(HIDDEN, FFN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(gelu_new(self.c_fc(self.ln_2(x))))


class GPT2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(MAX_POS, HIDDEN)
        self.h = nn.ModuleList(GPT2Block() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(HIDDEN)
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(0, input_ids.size(-1), dtype=torch.long).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# ------------------------------------------------------------------ ViT (timm layout)
class ViTAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head_dim = HIDDEN // HEADS
        self.scale = self.head_dim ** -0.5
        self.qkv, self.proj = nn.Linear(HIDDEN, 3 * HIDDEN), nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, HEADS, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class ViTBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(HIDDEN, eps=1e-6), ViTAttention()
        self.norm2 = nn.LayerNorm(HIDDEN, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, HIDDEN, PATCH, PATCH)
        patches = (IMAGE // PATCH) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, HIDDEN) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, HIDDEN) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(HIDDEN, eps=1e-6)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


# ------------------------------------------------------------------ Llama
class RMSNorm(nn.Module):
    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(HIDDEN) + 0.1 * torch.randn(HIDDEN))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


class Rotary(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv = self.inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)
        freqs = (inv @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """HF's repeat_kv: [B, kv, S, D] -> [B, kv * n_rep, S, D], each KV head repeated for its query group."""
    batch, kv_heads, slen, head_dim = x.shape
    if n_rep == 1:
        return x
    x = x[:, :, None, :, :].expand(batch, kv_heads, n_rep, slen, head_dim)
    return x.reshape(batch, kv_heads * n_rep, slen, head_dim)


class LlamaAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head_dim = HIDDEN // HEADS
        self.q_proj = nn.Linear(HIDDEN, HEADS * self.head_dim, bias=False)
        self.k_proj = nn.Linear(HIDDEN, KV_HEADS * self.head_dim, bias=False)
        self.v_proj = nn.Linear(HIDDEN, KV_HEADS * self.head_dim, bias=False)
        self.o_proj = nn.Linear(HEADS * self.head_dim, HIDDEN, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        input_shape = x.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(x).view(hidden_shape).transpose(1, 2)
        k = self.k_proj(x).view(hidden_shape).transpose(1, 2)
        v = self.v_proj(x).view(hidden_shape).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, HEADS // KV_HEADS), repeat_kv(v, HEADS // KV_HEADS)
        w = torch.matmul(q, k.transpose(2, 3)) * self.head_dim ** -0.5 + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(w, v).transpose(1, 2).contiguous()
        return self.o_proj(out.reshape(*input_shape, -1))


class LlamaMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(HIDDEN, FFN, bias=False), nn.Linear(HIDDEN, FFN, bias=False)
        self.down_proj = nn.Linear(FFN, HIDDEN, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_layernorm, self.self_attn = RMSNorm(), LlamaAttention()
        self.post_attention_layernorm, self.mlp = RMSNorm(), LlamaMLP()

    def forward(self, x, cos, sin, mask) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.rotary = Rotary(HIDDEN // HEADS)
        self.layers = nn.ModuleList(LlamaLayer() for _ in range(LAYERS))
        self.norm = RMSNorm()
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        position_ids = torch.arange(seq, dtype=torch.long).unsqueeze(0)
        full = torch.full((seq, seq), torch.finfo(torch.float32).min)
        mask = torch.triu(full, diagonal=1)[None, None, :, :]
        cos, sin = self.rotary(position_ids)
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


# ------------------------------------------------------------------ export
def _token_inputs(names: tuple[str, ...], batch: int = 2, seq: int = 8) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for name in names:
        if name == "attention_mask":
            out.append(torch.ones(batch, seq, dtype=torch.long))
        elif name == "token_type_ids":
            out.append((torch.arange(seq) >= seq // 2).long().expand(batch, seq).contiguous())
        else:
            out.append(torch.randint(0, VOCAB, (batch, seq), generator=gen))
    return tuple(out)


# name -> (module class, seed, input names, output name)
SPECS = {
    "bert": (Bert, 0, ("input_ids", "attention_mask", "token_type_ids"), "last_hidden_state"),
    "gpt2": (GPT2, 1, ("input_ids",), "logits"),
    "vit": (ViT, 2, ("pixel_values",), "logits"),
    "llama": (Llama, 3, ("input_ids",), "logits"),
}


def build(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...], tuple[str, ...], str]:
    cls, seed, inputs, output = SPECS[name]
    torch.manual_seed(seed)
    model = cls().eval()
    with torch.no_grad():  # LayerNorm affine parameters away from 1 / 0, so that they are not trivial
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
    if name == "vit":
        args = (torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0)),)
    else:
        args = _token_inputs(inputs)
    return model, args, inputs, output


def _dynamic_axes(inputs: tuple[str, ...], output: str) -> dict:
    axes = {n: ({0: "batch"} if n == "pixel_values" else {0: "batch", 1: "sequence"}) for n in inputs}
    axes[output] = {0: "batch"} if output == "logits" and "pixel_values" in inputs else {0: "batch", 1: "sequence"}
    return axes


def export_ts(name: str, path: Path) -> None:
    model, args, inputs, output = build(name)
    torch.onnx.export(
        model, args, str(path), dynamo=False, opset_version=TS_OPSET, input_names=list(inputs),
        output_names=[output], dynamic_axes=_dynamic_axes(inputs, output),
    )


def export_dynamo(name: str, path: Path) -> None:
    model, args, inputs, output = build(name)
    batch = torch.export.Dim("batch", min=1, max=64)
    sequence = torch.export.Dim("sequence", min=2, max=MAX_POS)
    shapes = tuple({0: batch} if n == "pixel_values" else {0: batch, 1: sequence} for n in inputs)
    program = torch.onnx.export(
        model, args, dynamo=True, opset_version=DYNAMO_OPSET, input_names=list(inputs), output_names=[output],
        dynamic_shapes=shapes, optimize=True, verify=False,
    )
    program.save(str(path), external_data=False)
    model = onnx.load(str(path))
    for node in model.graph.node:  # stack traces with this checkout's paths and line numbers: not reproducible
        del node.metadata_props[:]
    onnx.save(model, str(path))


def optimize_ort(source: Path, path: Path) -> None:
    """onnxruntime's transformer fusions, as `python -m onnxruntime.transformers.optimizer` applies them."""
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(str(source), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN, opt_level=1)
    fused.save_model_to_file(str(path))


def main(out: Path = HERE) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in SPECS:
        for kind, export in (("ts", export_ts), ("dynamo", export_dynamo)):
            path = out / f"tx_{name}_{kind}.onnx"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export(name, path)
                check_export(path)
            except Exception as exc:  # report every exporter failure, then fail at the end
                failed.append(path.name)
                print(f"{path.name}: export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    path = out / "tx_bert_ts_ortopt.onnx"
    try:
        optimize_ort(out / "tx_bert_ts.onnx", path)
        check_export(path)
    except Exception as exc:
        failed.append(path.name)
        print(f"{path.name}: optimization failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
