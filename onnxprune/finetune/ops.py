"""ONNX operators as torch functions: what the student module runs, one entry per op type.

Each function takes the node's input tensors (None for an omitted optional input), its attributes (a dict)
and the model's opset, and returns its outputs (a tensor or a tuple). Shape inputs arrive as int64 tensors
and are read with `.tolist()`: the graph runs eagerly, so dynamic dims need nothing special.

The set covers every op the pruning engine has a rule for (onnxprune/deps/ops), plus the constant and shape
ops exporters put around them. A case that the function cannot reproduce exactly (a Resize mode torch has no
kernel for, a MaxPool whose indices are read) raises UnsupportedOp with one line naming it.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import onnx
import torch
import torch.nn.functional as F

MS = "com.microsoft"


class UnsupportedOp(Exception):
    """The student cannot run this node; the message names the op and the reason, on one line."""


OpFn = Callable[..., object]
OPS: dict[tuple[str, str], OpFn] = {}


def op(*names: str, domain: str = ""):
    def register(fn: OpFn) -> OpFn:
        for name in names:
            OPS[(domain, name)] = fn
        return fn

    return register


def torch_dtype(elem_type: int) -> torch.dtype:
    """The torch dtype the student computes an ONNX element type in: half precisions train in float32."""
    if elem_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT):
        return torch.float32
    np_type = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    return torch.from_numpy(np.zeros(0, np_type)).dtype


def ints(t: Optional[torch.Tensor]) -> Optional[list[int]]:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ----------------------------------------------------------------------------------------------------- elementwise
def _unary(fn):
    return lambda inputs, attrs, opset: fn(inputs[0])


_UNARY = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Softsign": F.softsign, "Mish": F.mish,
    "Erf": torch.erf, "Abs": torch.abs, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Sign": torch.sign, "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Atan": torch.atan, "Asin": torch.asin,
    "Acos": torch.acos, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh, "Acosh": torch.acosh,
    "Atanh": torch.atanh, "Not": torch.logical_not, "IsNaN": torch.isnan, "HardSwish": F.hardswish,
}
for _name, _fn in _UNARY.items():
    OPS[("", _name)] = _unary(_fn)


@op("LeakyRelu")
def _leaky_relu(inputs, attrs, opset):
    return F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


@op("HardSigmoid")
def _hard_sigmoid(inputs, attrs, opset):
    return torch.clamp(inputs[0] * attrs.get("alpha", 0.2) + attrs.get("beta", 0.5), 0.0, 1.0)


@op("Elu")
def _elu(inputs, attrs, opset):
    return F.elu(inputs[0], attrs.get("alpha", 1.0))


@op("Selu")
def _selu(inputs, attrs, opset):
    x, alpha, gamma = inputs[0], attrs.get("alpha", 1.67326319217681884765625), attrs.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@op("Celu")
def _celu(inputs, attrs, opset):
    return F.celu(inputs[0], attrs.get("alpha", 1.0))


@op("Softplus")
def _softplus(inputs, attrs, opset):
    return F.softplus(inputs[0])


@op("ThresholdedRelu")
def _thresholded_relu(inputs, attrs, opset):
    x = inputs[0]
    return torch.where(x > attrs.get("alpha", 1.0), x, torch.zeros_like(x))


@op("Swish")
def _swish(inputs, attrs, opset):
    x = inputs[0]
    return x * torch.sigmoid(attrs.get("alpha", 1.0) * x)


@op("Gelu")
def _gelu(inputs, attrs, opset):
    return F.gelu(inputs[0], approximate="tanh" if attrs.get("approximate", b"none") in (b"tanh", "tanh") else "none")


@op("IsInf")
def _is_inf(inputs, attrs, opset):
    x = inputs[0]
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    return (torch.isposinf(x) if pos else torch.zeros_like(x, dtype=torch.bool)) | (
        torch.isneginf(x) if neg else torch.zeros_like(x, dtype=torch.bool))


@op("Shrink")
def _shrink(inputs, attrs, opset):
    x, bias, lambd = inputs[0], attrs.get("bias", 0.0), attrs.get("lambd", 0.5)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@op("Clip")
def _clip(inputs, attrs, opset):
    x = inputs[0]
    if opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
    else:
        lo = inputs[1] if len(inputs) > 1 else None
        hi = inputs[2] if len(inputs) > 2 else None
    if lo is not None:
        x = torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype, device=x.device))
    if hi is not None:
        x = torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device))
    return x


@op("Dropout")
def _dropout(inputs, attrs, opset):
    return inputs[0], torch.ones_like(inputs[0], dtype=torch.bool)


@op("Identity")
def _identity(inputs, attrs, opset):
    return inputs[0]


@op("Cast")
def _cast(inputs, attrs, opset):
    return inputs[0].to(torch_dtype(attrs["to"]))


@op("CastLike")
def _cast_like(inputs, attrs, opset):
    return inputs[0].to(inputs[1].dtype)


def _binary(fn):
    return lambda inputs, attrs, opset: fn(inputs[0], inputs[1])


_BINARY = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt,
    "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge, "And": torch.logical_and, "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}
for _name, _fn in _BINARY.items():
    OPS[("", _name)] = _binary(_fn)


@op("Div")
def _div(inputs, attrs, opset):
    a, b = inputs
    if not a.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


@op("Pow")
def _pow(inputs, attrs, opset):
    return torch.pow(inputs[0], inputs[1]).to(inputs[0].dtype)


@op("PRelu")
def _prelu(inputs, attrs, opset):
    x, slope = inputs
    return torch.where(x >= 0, x, x * slope)


@op("Mod")
def _mod(inputs, attrs, opset):
    a, b = inputs
    return torch.fmod(a, b) if attrs.get("fmod", 0) else torch.remainder(a, b)


@op("BitShift")
def _bit_shift(inputs, attrs, opset):
    a, b = inputs
    return a << b if attrs["direction"] in (b"LEFT", "LEFT") else a >> b


def _variadic(fn):
    def run(inputs, attrs, opset):
        out = inputs[0]
        for x in inputs[1:]:
            out = fn(out, x)
        return out

    return run


OPS[("", "Max")] = _variadic(torch.maximum)
OPS[("", "Min")] = _variadic(torch.minimum)
OPS[("", "Sum")] = _variadic(torch.add)


@op("Mean")
def _mean(inputs, attrs, opset):
    return _variadic(torch.add)(inputs, attrs, opset) / len(inputs)


@op("Where")
def _where(inputs, attrs, opset):
    return torch.where(inputs[0], inputs[1], inputs[2])


# ----------------------------------------------------------------------------------------------------- linear
@op("Gemm")
def _gemm(inputs, attrs, opset):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if attrs.get("transB", 0):
        b = b.transpose(0, 1)
    out = attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        out = out + attrs.get("beta", 1.0) * c
    return out


@op("MatMul")
def _matmul(inputs, attrs, opset):
    return torch.matmul(inputs[0], inputs[1])


# ----------------------------------------------------------------------------------------------------- recurrent
_RNN_ACTIVATIONS = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu}
_RNN_DEFAULTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _recurrent(op_type: str):
    """LSTM (gates i, o, f, c), GRU (z, r, h) and RNN as ONNX defines them, one time step after another;
    sequence_lens holds each sequence's state after its end and zeroes its outputs there."""

    def run(inputs, attrs, opset):
        x, w, r = inputs[0], inputs[1], inputs[2]
        at = lambda i: inputs[i] if len(inputs) > i else None  # noqa: E731
        b, lengths, h0, c0, p = at(3), at(4), at(5), at(6), at(7)
        if attrs.get("layout", 0) != 0:
            raise UnsupportedOp(f"{op_type} with layout=1")
        if attrs.get("input_forget", 0):
            raise UnsupportedOp(f"{op_type} with input_forget=1")
        names = [_text(a) for a in attrs.get("activations", [])]
        if any(n not in _RNN_ACTIVATIONS for n in names):
            raise UnsupportedOp(f"{op_type} activation(s) {', '.join(n for n in names if n not in _RNN_ACTIVATIONS)}")
        dirs, steps, batch, hidden = w.shape[0], x.shape[0], x.shape[1], r.shape[2]
        per_dir = len(_RNN_DEFAULTS[op_type])
        names = names or list(_RNN_DEFAULTS[op_type]) * dirs
        clip = attrs.get("clip")
        zeros = x.new_zeros(dirs, batch, hidden)
        h0 = zeros if h0 is None else h0
        c0 = zeros if c0 is None else c0
        valid = None if lengths is None else (torch.arange(steps, device=x.device)[:, None] < lengths.to(x.device)[None, :])
        reverse = _text(attrs.get("direction", b"forward")) == "reverse"
        ys, hs, cs = [], [], []
        for d in range(dirs):
            fns = [_RNN_ACTIVATIONS[n] for n in names[d * per_dir:(d + 1) * per_dir]]
            if clip is not None:  # onnxruntime clips the gates' inputs, not the cell state before h's activation
                fns = [(lambda fn: (lambda v: fn(v.clamp(-clip, clip))))(fn) for fn in fns[:2]] + fns[2:]
            bias_w, bias_r = (None, None) if b is None else b[d].chunk(2)
            h, c = h0[d], c0[d]
            out = [None] * steps
            order = range(steps - 1, -1, -1) if (reverse or d == 1) else range(steps)
            for t in order:
                gx = x[t] @ w[d].T + (0 if bias_w is None else bias_w)
                if op_type == "GRU":
                    h_new = _gru_step(gx, h, r[d], bias_r, fns, attrs.get("linear_before_reset", 0))
                    c_new = c
                else:
                    gh = h @ r[d].T + (0 if bias_r is None else bias_r)
                    if op_type == "RNN":
                        h_new, c_new = fns[0](gx + gh), c
                    else:
                        h_new, c_new = _lstm_step(gx + gh, c, None if p is None else p[d], fns)
                if valid is not None:
                    keep = valid[t][:, None]
                    h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
                    out[t] = torch.where(keep, h_new, torch.zeros_like(h_new))
                else:
                    h, c = h_new, c_new
                    out[t] = h_new
            ys.append(torch.stack(out))
            hs.append(h)
            cs.append(c)
        y = torch.stack(ys, 1)
        return (y, torch.stack(hs), torch.stack(cs)) if op_type == "LSTM" else (y, torch.stack(hs))

    return run


def _lstm_step(pre, c, peep, fns):
    f_act, g_act, h_act = fns
    i, o, f, g = pre.chunk(4, -1)
    if peep is not None:
        p_i, p_o, p_f = peep.chunk(3)
        i, f = i + p_i * c, f + p_f * c
    i, f, g = f_act(i), f_act(f), g_act(g)
    c = f * c + i * g
    if peep is not None:
        o = o + p_o * c
    return f_act(o) * h_act(c), c


def _gru_step(gx, h, r_weight, bias_r, fns, linear_before_reset):
    f_act, g_act = fns
    x_z, x_r, x_h = gx.chunk(3, -1)
    r_z, r_r, r_h = r_weight.chunk(3, 0)
    b_z, b_r, b_h = (0, 0, 0) if bias_r is None else bias_r.chunk(3)
    z = f_act(x_z + h @ r_z.T + b_z)
    reset = f_act(x_r + h @ r_r.T + b_r)
    if linear_before_reset:
        candidate = g_act(x_h + reset * (h @ r_h.T + b_h))
    else:
        candidate = g_act(x_h + (reset * h) @ r_h.T + b_h)
    return (1 - z) * candidate + z * h


for _name in _RNN_DEFAULTS:
    OPS[("", _name)] = _recurrent(_name)


# ----------------------------------------------------------------------------------------------------- conv and pool
def _spatial_pads(attrs, x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """ONNX pads [begin..., end...] for the spatial dims, auto_pad resolved."""
    n = len(kernel)
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else large)
            end.append(large if auto == "SAME_UPPER" else small)
        return begin + end
    if auto == "VALID":
        return [0] * (2 * n)
    return list(attrs.get("pads", [0] * (2 * n)))


def _symmetric(pads: list[int]) -> Optional[list[int]]:
    n = len(pads) // 2
    return pads[:n] if pads[:n] == pads[n:] else None


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] over the trailing dims -> F.pad's (last dim first) [b_last, e_last, ...]."""
    n = len(pads) // 2
    out = []
    for i in reversed(range(n)):
        out += [pads[i], pads[n + i]]
    return out


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@op("Conv")
def _conv(inputs, attrs, opset):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    n = w.dim() - 2
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = _spatial_pads(attrs, x, kernel, strides, dilations)
    same = _symmetric(pads)
    if same is None:
        x, same = F.pad(x, _torch_pad(pads)), [0] * n
    return _CONV[n](x, w, b, strides, same, dilations, attrs.get("group", 1))


@op("ConvTranspose")
def _conv_transpose(inputs, attrs, opset):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    n = w.dim() - 2
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    out_pad = list(attrs.get("output_padding", [0] * n))
    if "output_shape" in attrs or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOp("ConvTranspose with output_shape or auto_pad")
    pads = list(attrs.get("pads", [0] * (2 * n)))
    y = _CONV_T[n](x, w, b, strides, 0, out_pad, attrs.get("group", 1), dilations)
    index = [slice(None), slice(None)] + [slice(pads[i], y.shape[2 + i] - pads[n + i]) for i in range(n)]
    return y[tuple(index)]


def _pool_geometry(attrs, x):
    kernel = list(attrs["kernel_shape"])
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    return kernel, strides, dilations, _spatial_pads(attrs, x, kernel, strides, dilations)


_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@op("MaxPool")
def _max_pool(inputs, attrs, opset):
    x = inputs[0]
    kernel, strides, dilations, pads = _pool_geometry(attrs, x)
    same = _symmetric(pads)
    if same is None or any(2 * p > k for p, k in zip(same, kernel)):
        x, same = F.pad(x, _torch_pad(pads), value=float("-inf")), [0] * len(kernel)
    return _MAX_POOL[len(kernel)](x, kernel, strides, same, dilations, ceil_mode=bool(attrs.get("ceil_mode", 0)))


@op("AveragePool")
def _avg_pool(inputs, attrs, opset):
    x = inputs[0]
    kernel, strides, dilations, pads = _pool_geometry(attrs, x)
    if any(d != 1 for d in dilations):
        raise UnsupportedOp("AveragePool with dilations")
    include = bool(attrs.get("count_include_pad", 0))
    ceil = bool(attrs.get("ceil_mode", 0))
    same = _symmetric(pads)
    if same is not None and all(2 * p <= k for p, k in zip(same, kernel)):
        if len(kernel) == 1:
            return F.avg_pool1d(x, kernel, strides, same, ceil, include)
        return _AVG_POOL[len(kernel)](x, kernel, strides, same, ceil, include)
    # asymmetric pads: sum over the padded input, divided by the count of real (or all) positions
    padded = F.pad(x, _torch_pad(pads))
    sums = _AVG_POOL[len(kernel)](padded, kernel, strides, 0, ceil, True) * math.prod(kernel)
    if include:
        return sums / math.prod(kernel)
    ones = F.pad(torch.ones_like(x[:1, :1]), _torch_pad(pads))
    counts = _AVG_POOL[len(kernel)](ones, kernel, strides, 0, ceil, True) * math.prod(kernel)
    return sums / counts


@op("LpPool")
def _lp_pool(inputs, attrs, opset):
    x = inputs[0]
    p = attrs.get("p", 2)
    kernel, strides, dilations, pads = _pool_geometry(attrs, x)
    padded = F.pad(x.abs() ** p, _torch_pad(pads))
    sums = _AVG_POOL[len(kernel)](padded, kernel, strides, 0, bool(attrs.get("ceil_mode", 0)), True)
    return (sums * math.prod(kernel)) ** (1.0 / p)


@op("GlobalAveragePool")
def _global_avg(inputs, attrs, opset):
    x = inputs[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def _global_max(inputs, attrs, opset):
    x = inputs[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@op("GlobalLpPool")
def _global_lp(inputs, attrs, opset):
    x, p = inputs[0], attrs.get("p", 2)
    return (x.abs() ** p).sum(dim=tuple(range(2, x.dim())), keepdim=True) ** (1.0 / p)


# ----------------------------------------------------------------------------------------------------- reductions
def _reduce_axes(inputs, attrs, opset, op_type: str, rank: int) -> Optional[tuple[int, ...]]:
    """None means all axes; () means none (noop_with_empty_axes)."""
    takes_input = opset >= 18 or (op_type == "ReduceSum" and opset >= 13)
    axes = ints(inputs[1]) if takes_input and len(inputs) > 1 else (None if takes_input else attrs.get("axes"))
    if not axes:
        return () if attrs.get("noop_with_empty_axes", 0) else None
    return tuple(_axis(a, rank) for a in axes)


_REDUCERS = {
    "ReduceMean": lambda x, d, k: x.mean(d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL1": lambda x, d, k: x.abs().sum(d, keepdim=k),
    "ReduceL2": lambda x, d, k: (x * x).sum(d, keepdim=k).sqrt(),
    "ReduceLogSum": lambda x, d, k: x.sum(d, keepdim=k).log(),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(d, keepdim=k),
}


def _prod(x, dims, keep):
    for d in sorted(dims, reverse=True):
        x = x.prod(d, keepdim=keep)
    return x


def _reducer(op_type: str):
    def run(inputs, attrs, opset):
        x = inputs[0]
        axes = _reduce_axes(inputs, attrs, opset, op_type, x.dim())
        if axes == ():
            return x
        dims = tuple(range(x.dim())) if axes is None else axes
        return _REDUCERS[op_type](x, dims, bool(attrs.get("keepdims", 1)))

    return run


for _name in _REDUCERS:
    OPS[("", _name)] = _reducer(_name)


def _arg(fn):
    def run(inputs, attrs, opset):
        x = inputs[0]
        axis = _axis(attrs.get("axis", 0), x.dim())
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            flipped = fn(x.flip(axis), axis, keepdim=keep)
            return x.shape[axis] - 1 - flipped
        return fn(x, axis, keepdim=keep)

    return run


OPS[("", "ArgMax")] = _arg(torch.argmax)
OPS[("", "ArgMin")] = _arg(torch.argmin)


# ----------------------------------------------------------------------------------------------------- normalization
@op("BatchNormalization")
def _batch_norm(inputs, attrs, opset):
    x, scale, bias, mean, var = inputs[:5]
    shape = [1, -1] + [1] * (x.dim() - 2)
    inv = torch.rsqrt(var + attrs.get("epsilon", 1e-5)) * scale
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


@op("InstanceNormalization")
def _instance_norm(inputs, attrs, opset):
    x, scale, bias = inputs
    return F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))


@op("LayerNormalization")
def _layer_norm(inputs, attrs, opset):
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = _axis(attrs.get("axis", -1), x.dim())
    return F.layer_norm(x, x.shape[axis:], scale.expand(x.shape[axis:]) if scale.dim() < x.dim() - axis else scale,
                        bias, attrs.get("epsilon", 1e-5))


def _coerced(fn):
    """Softmax, LogSoftmax and Hardmax before opset 13 work on the input flattened to 2-D at `axis`."""
    def run(inputs, attrs, opset):
        x = inputs[0]
        if opset < 13:
            axis = _axis(attrs.get("axis", 1), x.dim())
            flat = x.reshape(math.prod(x.shape[:axis]), -1)
            return fn(flat, 1).reshape(x.shape)
        return fn(x, _axis(attrs.get("axis", -1), x.dim()))

    return run


def _hardmax(x, axis):
    return F.one_hot(x.argmax(axis), x.shape[axis]).movedim(-1, axis).to(x.dtype)


OPS[("", "Softmax")] = _coerced(lambda x, a: torch.softmax(x, a))
OPS[("", "LogSoftmax")] = _coerced(lambda x, a: torch.log_softmax(x, a))
OPS[("", "Hardmax")] = _coerced(_hardmax)


@op("LpNormalization")
def _lp_norm(inputs, attrs, opset):
    x = inputs[0]
    return F.normalize(x, p=attrs.get("p", 2), dim=_axis(attrs.get("axis", -1), x.dim()), eps=0.0)


# ----------------------------------------------------------------------------------------------------- shape and layout
@op("Constant")
def _constant(inputs, attrs, opset):
    raise AssertionError("Constant nodes are loaded as the student's tensors")  # student.py reads them


@op("Shape")
def _shape(inputs, attrs, opset):
    dims = list(inputs[0].shape)
    start, end = attrs.get("start", 0), attrs.get("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64, device=inputs[0].device)


@op("Size")
def _size(inputs, attrs, opset):
    return torch.tensor(inputs[0].numel(), dtype=torch.int64, device=inputs[0].device)


@op("ConstantOfShape")
def _constant_of_shape(inputs, attrs, opset):
    value = attrs.get("value")
    fill = torch.from_numpy(onnx.numpy_helper.to_array(value).copy()).reshape(-1) if value is not None else None
    dtype = fill.dtype if fill is not None else torch.float32
    if dtype == torch.float16:
        dtype = torch.float32
    return torch.full(ints(inputs[0]), fill[0].item() if fill is not None else 0.0, dtype=dtype,
                      device=inputs[0].device)


@op("Range")
def _range(inputs, attrs, opset):
    start, limit, delta = inputs
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)


@op("Reshape")
def _reshape(inputs, attrs, opset):
    x, shape = inputs[0], ints(inputs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def _flatten(inputs, attrs, opset):
    x = inputs[0]
    axis = _axis(attrs.get("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), -1)


@op("Transpose")
def _transpose(inputs, attrs, opset):
    x = inputs[0]
    return x.permute(*attrs.get("perm", list(reversed(range(x.dim())))))


@op("Squeeze")
def _squeeze(inputs, attrs, opset):
    x = inputs[0]
    axes = ints(inputs[1]) if opset >= 13 and len(inputs) > 1 else attrs.get("axes")
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    axes = {_axis(a, x.dim()) for a in axes}
    return x.reshape([d for i, d in enumerate(x.shape) if i not in axes])


@op("Unsqueeze")
def _unsqueeze(inputs, attrs, opset):
    x = inputs[0]
    axes = ints(inputs[1]) if opset >= 13 else list(attrs["axes"])
    rank = x.dim() + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Concat")
def _concat(inputs, attrs, opset):
    parts = [t for t in inputs if t is not None and not (t.dim() == 1 and t.shape[0] == 0 and len(inputs) > 1)]
    parts = parts or [inputs[0]]
    return torch.cat(parts, dim=_axis(attrs["axis"], parts[0].dim()))


@op("Split")
def _split(inputs, attrs, opset, outputs: int = 1):
    x = inputs[0]
    axis = _axis(attrs.get("axis", 0), x.dim())
    sizes = ints(inputs[1]) if opset >= 13 and len(inputs) > 1 and inputs[1] is not None else attrs.get("split")
    if not sizes:
        n = attrs.get("num_outputs", outputs)
        step = -(-x.shape[axis] // n)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(n)]
    return tuple(torch.split(x, list(sizes), dim=axis))


@op("Slice")
def _slice(inputs, attrs, opset):
    x = inputs[0]
    if opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = ints(inputs[1]), ints(inputs[2])
        axes = ints(inputs[3]) if len(inputs) > 3 else None
        steps = ints(inputs[4]) if len(inputs) > 4 else None
    axes = list(range(len(starts))) if axes is None else [_axis(a, x.dim()) for a in axes]
    steps = steps or [1] * len(starts)
    index = [slice(None)] * x.dim()
    flips = []
    for a, s, e, st in zip(axes, starts, ends, steps):
        size = x.shape[a]
        if st > 0:
            s = min(max(s + size if s < 0 else s, 0), size)
            e = min(max(e + size if e < 0 else e, 0), size)
            index[a] = slice(s, max(s, e), st)
        else:  # negative step: slice the flipped axis
            s = min(max(s + size if s < 0 else s, -1), size - 1)
            e = min(max(e + size if e < 0 else e, -1), size - 1)
            flips.append(a)
            index[a] = slice(size - 1 - s, size - 1 - e if e < s else size - 1 - s, -st)
    if flips:
        x = x.flip(flips)
    return x[tuple(index)]


@op("Gather")
def _gather(inputs, attrs, opset):
    x, idx = inputs
    axis = _axis(attrs.get("axis", 0), x.dim())
    idx = torch.where(idx < 0, idx + x.shape[axis], idx).long()
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


@op("Expand")
def _expand(inputs, attrs, opset):
    x, shape = inputs[0], ints(inputs[1])
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))


@op("Tile")
def _tile(inputs, attrs, opset):
    return inputs[0].repeat(ints(inputs[1]))


@op("Trilu")
def _trilu(inputs, attrs, opset):
    x = inputs[0]
    k = int(inputs[1].item()) if len(inputs) > 1 and inputs[1] is not None else 0
    return torch.triu(x, k) if attrs.get("upper", 1) else torch.tril(x, k)


@op("Pad")
def _pad(inputs, attrs, opset):
    x = inputs[0]
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if opset < 11:
        pads, value, axes = list(attrs["pads"]), attrs.get("value", 0.0), None
    else:
        pads = ints(inputs[1])
        value = inputs[2].item() if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else 0.0
        axes = ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    axes = list(range(x.dim())) if axes is None else [_axis(a, x.dim()) for a in axes]
    n = len(axes)
    full = [0] * (2 * x.dim())
    for i, a in enumerate(axes):
        full[a], full[x.dim() + a] = pads[i], pads[n + i]
    first = next((a for a in range(x.dim()) if full[a] or full[x.dim() + a]), x.dim())
    trailing = full[first:x.dim()] + full[x.dim() + first:]
    if not any(trailing):
        return x
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise UnsupportedOp(f"Pad mode {mode!r}")
    if torch_mode == "constant":
        return F.pad(x, _torch_pad(trailing), value=value)
    if first < 2 or x.dim() - first > 3:
        raise UnsupportedOp(f"Pad mode {mode!r} on the batch or channel axis")
    return F.pad(x, _torch_pad(trailing), mode=torch_mode)


@op("Resize", "Upsample")
def _resize(inputs, attrs, opset, op_type: str = "Resize"):
    x = inputs[0]
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    coord = attrs.get("coordinate_transformation_mode", b"half_pixel" if op_type == "Resize" and opset >= 11 else b"asymmetric")
    coord = coord.decode() if isinstance(coord, bytes) else coord
    nearest = attrs.get("nearest_mode", b"round_prefer_floor")
    nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
    if op_type == "Upsample" or opset < 11:
        scales = attrs.get("scales") if "scales" in attrs else inputs[1].tolist()
        sizes = None
    else:
        scales = inputs[2].tolist() if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else None
        sizes = ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    if "axes" in attrs or attrs.get("antialias", 0) or attrs.get("keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
        raise UnsupportedOp("Resize with axes, antialias or keep_aspect_ratio_policy")
    if sizes is None:
        if any(abs(s - 1) > 1e-9 for s in scales[:2]):
            raise UnsupportedOp("Resize of the batch or channel axis")
        sizes = [int(math.floor(d * s)) for d, s in zip(x.shape, scales)]
        spatial_scales = [float(s) for s in scales[2:]]
    else:
        spatial_scales = None
    out_size = sizes[2:]
    if mode == "nearest":
        if coord == "asymmetric" and nearest == "floor":
            return F.interpolate(x, size=out_size, mode="nearest", scale_factor=None)
        if coord in ("half_pixel", "pytorch_half_pixel") and nearest == "round_prefer_ceil":
            return F.interpolate(x, size=out_size, mode="nearest-exact")
        if all(o % i == 0 for o, i in zip(out_size, x.shape[2:])) and coord in ("asymmetric", "half_pixel"):
            return F.interpolate(x, size=out_size, mode="nearest")  # integer upscaling: every mode agrees
        raise UnsupportedOp(f"Resize nearest with {coord} / {nearest}")
    if mode in ("linear", "cubic"):
        torch_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.dim() - 2] if mode == "linear" else "bicubic"
        if mode == "cubic" and (x.dim() != 4 or abs(attrs.get("cubic_coeff_a", -0.75) + 0.75) > 1e-6):
            raise UnsupportedOp("Resize cubic other than 2-D with coefficient -0.75")
        if coord == "align_corners":
            return F.interpolate(x, size=out_size, mode=torch_mode, align_corners=True)
        if coord in ("half_pixel", "pytorch_half_pixel"):
            if spatial_scales is not None and coord == "half_pixel":
                return F.interpolate(x, scale_factor=spatial_scales, mode=torch_mode, align_corners=False,
                                     recompute_scale_factor=False)
            return F.interpolate(x, size=out_size, mode=torch_mode, align_corners=False)
        raise UnsupportedOp(f"Resize {mode} with {coord}")
    raise UnsupportedOp(f"Resize mode {mode!r}")


# ----------------------------------------------------------------------------------------------------- com.microsoft
@op("Gelu", domain=MS)
def _ms_gelu(inputs, attrs, opset):
    return F.gelu(inputs[0])


@op("BiasGelu", domain=MS)
def _bias_gelu(inputs, attrs, opset):
    return F.gelu(inputs[0] + inputs[1])


@op("FastGelu", domain=MS)
def _fast_gelu(inputs, attrs, opset):
    x = inputs[0] if len(inputs) < 2 or inputs[1] is None else inputs[0] + inputs[1]
    return F.gelu(x, approximate="tanh")


@op("QuickGelu", domain=MS)
def _quick_gelu(inputs, attrs, opset):
    x = inputs[0]
    return x * torch.sigmoid(attrs.get("alpha", 1.702) * x)


def _skip_sum(inputs, bias_slot: int):
    x = inputs[0] + inputs[1]
    if len(inputs) > bias_slot and inputs[bias_slot] is not None:
        x = x + inputs[bias_slot]
    return x


@op("SkipLayerNormalization", domain=MS)
def _skip_layer_norm(inputs, attrs, opset):
    x = _skip_sum(inputs, 4)
    beta = inputs[3] if len(inputs) > 3 else None
    out = F.layer_norm(x, x.shape[-1:], inputs[2], beta, attrs.get("epsilon", 1e-12))
    return out, None, None, x


@op("SkipSimplifiedLayerNormalization", domain=MS)
def _skip_rms_norm(inputs, attrs, opset):
    x = _skip_sum(inputs, 3)
    out = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + attrs.get("epsilon", 1e-12)) * inputs[2]
    return out, None, None, x


def _attend(q, k, v, heads: int, scale: Optional[float], mask: Optional[torch.Tensor], causal: bool):
    """q [B, S, H*D], k [B, L, H*D], v [B, L, H*Dv] -> [B, S, H*Dv]; mask: additive, broadcast to [B, H, S, L]."""
    b, s, _ = q.shape
    length = k.shape[1]
    q = q.reshape(b, s, heads, -1).transpose(1, 2)
    k = k.reshape(b, length, heads, -1).transpose(1, 2)
    v = v.reshape(b, length, heads, -1).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) * (scale if scale else 1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores + mask
    if causal:
        future = torch.ones(s, length, dtype=torch.bool, device=q.device).triu(length - s + 1)
        scores = scores.masked_fill(future, float("-inf"))
    out = torch.softmax(scores, -1) @ v
    return out.transpose(1, 2).reshape(b, s, -1)


def _key_padding(mask: Optional[torch.Tensor], batch: int, length: int, what: str) -> Optional[torch.Tensor]:
    """A [B, L] 0/1 key mask or [B] key lengths as an additive [B, 1, 1, L] mask; other forms are declined."""
    if mask is None:
        return None
    if mask.dim() == 1 and mask.shape[0] == batch:  # key lengths (right padding)
        keys = torch.arange(length, device=mask.device)[None, :] < mask.to(torch.int64)[:, None]
        return ((~keys).to(torch.float32) * -10000.0)[:, None, None, :]
    if mask.dim() != 2 or mask.shape[0] != batch:
        raise UnsupportedOp(f"{what} with a mask of shape {list(mask.shape)} (only [batch, keys] 0/1 masks)")
    return ((1 - mask.to(torch.float32)) * -10000.0)[:, None, None, :]


@op("Attention", domain=MS)
def _attention(inputs, attrs, opset):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    if any(t is not None for t in inputs[4:]):
        raise UnsupportedOp("Attention with past state or attention bias")
    heads = attrs["num_heads"]
    qkv = x @ w + (bias if bias is not None else 0)
    sizes = list(attrs.get("qkv_hidden_sizes", [w.shape[1] // 3] * 3))
    q, k, v = torch.split(qkv, sizes, dim=-1)
    mask = _key_padding(inputs[3] if len(inputs) > 3 else None, x.shape[0], x.shape[1], "Attention")
    return _attend(q, k, v, heads, attrs.get("scale"), mask, bool(attrs.get("unidirectional", 0))), None


@op("MultiHeadAttention", domain=MS)
def _multi_head_attention(inputs, attrs, opset):
    q, k, v = (inputs + [None] * 3)[:3]
    if k is None or v is None or q.dim() != 3 or k.dim() != 3:
        raise UnsupportedOp("MultiHeadAttention with packed QKV or key/value already split into heads")
    if any(t is not None for t in inputs[6:]):
        raise UnsupportedOp("MultiHeadAttention with past state")
    bias = inputs[3] if len(inputs) > 3 else None
    if bias is not None:
        d, dk = q.shape[-1], k.shape[-1]
        q, k, v = q + bias[:d], k + bias[d:d + dk], v + bias[d + dk:]
    mask = _key_padding(inputs[4] if len(inputs) > 4 else None, q.shape[0], k.shape[1], "MultiHeadAttention")
    extra = inputs[5] if len(inputs) > 5 else None
    if extra is not None:
        mask = extra if mask is None else mask + extra
    out = _attend(q, k, v, attrs["num_heads"], attrs.get("scale"), mask, bool(attrs.get("unidirectional", 0)))
    return out, None, None


@op("EmbedLayerNormalization", domain=MS)
def _embed_layer_norm(inputs, attrs, opset):
    ids, segments, words, positions, segment_table, gamma, beta = (list(inputs) + [None] * 7)[:7]
    mask = inputs[7] if len(inputs) > 7 else None
    position_ids = inputs[8] if len(inputs) > 8 else None
    if position_ids is None:
        position_ids = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape)
    total = words[ids.long()] + positions[position_ids.long()]
    if segments is not None and segment_table is not None:
        total = total + segment_table[segments.long()]
    out = F.layer_norm(total, total.shape[-1:], gamma, beta, attrs.get("epsilon", 1e-12))
    lengths = (mask.sum(1).to(torch.int32) if mask is not None
               else torch.zeros(ids.shape[0], dtype=torch.int32, device=ids.device))
    return out, lengths, total


def supported(domain: str, op_type: str) -> bool:
    return (domain, op_type) in OPS


def run(domain: str, op_type: str, inputs, attrs, opset: int, outputs: int):
    fn = OPS[(domain, op_type)]
    if op_type == "Split":
        return fn(inputs, attrs, opset, outputs)
    if op_type in ("Resize", "Upsample"):
        return fn(inputs, attrs, opset, op_type)
    return fn(inputs, attrs, opset)
