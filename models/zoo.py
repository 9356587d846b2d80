"""Example ONNX models built in code, for testing and demonstrating onnxprune.

Every builder returns an ``onnx.ModelProto`` with random weights drawn from a seeded numpy
Generator (He-style init; BatchNormalization left unfused with non-trivial statistics), opset 17,
IR version 8, one float input named ``input`` whose batch dimension is the symbol ``N``.

``EXAMPLES`` maps a name to a builder of a *small* model (about 1x3x32x32 input, < 1 MB) that covers
one family of graph patterns.  ``resnet18``, ``resnet50`` and ``mobilenet_v2`` at their default
arguments build the real full-size layouts for benchmarks.

    python -m models.zoo OUT_DIR      # writes every EXAMPLES model as OUT_DIR/<name>.onnx
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17
IR_VERSION = 8
BATCH = "N"

# (channels, spatial sizes) of a tensor without its batch axis; spatial () means a [N, C] tensor.
Meta = tuple[int, tuple[int, ...]]


def _ints(v: int | Sequence[int], n: int) -> list[int]:
    return [int(v)] * n if isinstance(v, (int, np.integer)) else [int(i) for i in v]


class GraphBuilder:
    """Accumulates nodes and weights of one graph and tracks the channels and spatial size of
    every activation, so layer helpers need only the output channel count.

    Names are scoped: inside ``with b.scope("layer1.0"):`` a conv named ``conv1`` becomes the
    node ``layer1.0.conv1`` with the weight ``layer1.0.conv1.weight``; a node's output tensor
    carries the node's name.
    """

    def __init__(
        self,
        name: str,
        *,
        seed: int = 0,
        dtype: type = np.float32,
        constant_weights: bool = False,
        identity_weights: bool = False,
    ) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.elem = helper.np_dtype_to_tensor_dtype(self.dtype)
        self.constant_weights = constant_weights  # weights as Constant nodes (Paddle style)
        self.identity_weights = identity_weights  # ... each read through an Identity node
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[str] = []
        self.meta: dict[str, Meta] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # weight name -> shape
        self._prefix: list[str] = []
        self._used: set[str] = set()

    # ---------------------------------------------------------------- names and weights
    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        self._prefix.append(name)
        try:
            yield
        finally:
            self._prefix.pop()

    def new_name(self, name: str) -> str:
        base = ".".join([*self._prefix, name])
        full, k = base, 0
        while full in self._used:
            k += 1
            full = f"{base}_{k}"
        self._used.add(full)
        return full

    def channels(self, x: str) -> int:
        return self.meta[x][0]

    def param(self, name: str, array: np.ndarray, *, scoped: bool = True, keep_dtype: bool = False) -> str:
        """A constant tensor: an initializer, or a Constant node (optionally behind an Identity)."""
        full = self.new_name(name) if scoped else name
        self._used.add(full)
        arr = np.asarray(array)
        if not keep_dtype:
            arr = arr.astype(self.dtype)
        self.shapes[full] = arr.shape
        if not self.constant_weights:
            self.initializers.append(numpy_helper.from_array(arr, full))
            return full
        const = f"{full}.const" if self.identity_weights and arr.ndim > 1 else full
        self.nodes.append(
            helper.make_node("Constant", [], [const], name=const, value=numpy_helper.from_array(arr, const))
        )
        if const != full:
            self.nodes.append(helper.make_node("Identity", [const], [full], name=f"{full}.identity"))
        return full

    def scalar(self, value: float, name: str = "const") -> str:
        return self.param(name, np.array(value))

    def ints(self, values: Sequence[int], name: str) -> str:
        return self.param(name, np.array(values, dtype=np.int64), keep_dtype=True)

    def he(self, shape: Sequence[int], fan_in: int, gain: float = 2.0) -> np.ndarray:
        return self.rng.normal(0.0, math.sqrt(gain / fan_in), size=tuple(shape))

    # ---------------------------------------------------------------- graph ends
    def input(self, shape: Sequence[int], name: str = "input") -> str:
        c, *spatial = shape
        self.inputs.append(helper.make_tensor_value_info(name, self.elem, [BATCH, *shape]))
        self.meta[name] = (int(c), tuple(spatial))
        self._used.add(name)
        return name

    def output(self, x: str, name: str | None = None) -> str:
        """Marks ``x`` as a graph output, renamed to ``name`` when given."""
        if name is not None and name != x:
            for node in self.nodes:
                for i, out in enumerate(node.output):
                    if out == x:
                        node.output[i] = name
            self.meta[name] = self.meta[x]
            x = name
        self.outputs.append(x)
        return x

    def model(self, *, opset: int = OPSET, ir_version: int = IR_VERSION, doc: str = "") -> onnx.ModelProto:
        outputs = []
        for name in self.outputs:
            c, spatial = self.meta[name]
            outputs.append(helper.make_tensor_value_info(name, self.elem, [BATCH, c, *spatial]))
        graph = helper.make_graph(self.nodes, self.name, self.inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name="onnxprune.models",
            ir_version=ir_version,
            doc_string=doc,
        )
        return model

    # ---------------------------------------------------------------- generic node
    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        *,
        name: str | None = None,
        full_name: str | None = None,
        meta: Meta | None = None,
        outputs: int = 1,
        **attrs,
    ) -> str | list[str]:
        """Adds one node; its outputs get ``meta`` (default: that of the first input that has one)."""
        node_name = full_name or self.new_name(name or op_type.lower())
        outs = [node_name] if outputs == 1 else [f"{node_name}.{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        m = meta if meta is not None else next((self.meta[i] for i in inputs if i in self.meta), None)
        if m is not None:
            for o in outs:
                self.meta[o] = m
        return outs[0] if outputs == 1 else outs

    # ---------------------------------------------------------------- layers
    def conv(
        self,
        x: str,
        cout: int,
        k: int | Sequence[int] = 3,
        *,
        stride: int = 1,
        pad: int | Sequence[int] | None = None,
        group: int = 1,
        dilation: int = 1,
        bias: bool = True,
        weight: str | None = None,
        name: str = "conv",
    ) -> str:
        cin, spatial = self.meta[x]
        nd = len(spatial)
        ks = _ints(k, nd)
        pads = _ints(pad, nd) if pad is not None else [dilation * (kk - 1) // 2 for kk in ks]
        n = self.new_name(name)
        if weight is None:
            fan_in = cin // group * math.prod(ks)
            weight = self.param(f"{n}.weight", self.he((cout, cin // group, *ks), fan_in), scoped=False)
        else:
            cout = self.shapes[weight][0]
        inputs = [x, weight]
        if bias:
            inputs.append(self.param(f"{n}.bias", self.rng.normal(0, 0.05, cout), scoped=False))
        out_sp = tuple((s + 2 * p - dilation * (kk - 1) - 1) // stride + 1 for s, p, kk in zip(spatial, pads, ks))
        return self.op(
            "Conv", inputs, full_name=n, meta=(cout, out_sp), kernel_shape=ks, strides=[stride] * nd,
            pads=pads * 2, dilations=[dilation] * nd, group=group,
        )

    def conv_transpose(self, x: str, cout: int, k: int = 2, *, stride: int = 2, name: str = "up") -> str:
        cin, spatial = self.meta[x]
        nd = len(spatial)
        n = self.new_name(name)
        w = self.param(f"{n}.weight", self.he((cin, cout, *[k] * nd), cin * k**nd // stride**nd), scoped=False)
        b = self.param(f"{n}.bias", self.rng.normal(0, 0.05, cout), scoped=False)
        out_sp = tuple((s - 1) * stride + k for s in spatial)
        return self.op(
            "ConvTranspose", [x, w, b], full_name=n, meta=(cout, out_sp), kernel_shape=[k] * nd, strides=[stride] * nd
        )

    def bn(self, x: str, *, name: str = "bn", gamma: tuple[float, float] = (0.5, 1.5), eps: float = 1e-5) -> str:
        c = self.channels(x)
        n = self.new_name(name)
        r = self.rng
        ps = [
            self.param(f"{n}.{field}", value, scoped=False)
            for field, value in (
                ("weight", r.uniform(*gamma, c)),
                ("bias", r.normal(0, 0.1, c)),
                ("running_mean", r.normal(0, 0.1, c)),
                ("running_var", r.uniform(0.5, 1.5, c)),
            )
        ]
        return self.op("BatchNormalization", [x, *ps], full_name=n, epsilon=eps)

    def instance_norm(self, x: str, *, name: str = "in") -> str:
        c = self.channels(x)
        n = self.new_name(name)
        s = self.param(f"{n}.weight", self.rng.uniform(0.5, 1.5, c), scoped=False)
        b = self.param(f"{n}.bias", self.rng.normal(0, 0.1, c), scoped=False)
        return self.op("InstanceNormalization", [x, s, b], full_name=n, epsilon=1e-5)

    def gemm(self, x: str, cout: int, *, name: str = "fc", gain: float = 2.0) -> str:
        cin = self.channels(x)
        n = self.new_name(name)
        w = self.param(f"{n}.weight", self.he((cout, cin), cin, gain), scoped=False)
        b = self.param(f"{n}.bias", self.rng.normal(0, 0.05, cout), scoped=False)
        return self.op("Gemm", [x, w, b], full_name=n, meta=(cout, ()), transB=1)

    def linear_matmul(self, x: str, cout: int, *, name: str = "fc", gain: float = 2.0) -> str:
        """PyTorch-exporter style linear layer: MatMul with an [in, out] weight, then Add bias."""
        cin = self.channels(x)
        n = self.new_name(name)
        w = self.param(f"{n}.weight", self.he((cin, cout), cin, gain), scoped=False)
        b = self.param(f"{n}.bias", self.rng.normal(0, 0.05, cout), scoped=False)
        y = self.op("MatMul", [x, w], name=f"{name}.matmul", meta=(cout, ()))
        return self.op("Add", [y, b], name=f"{name}.add")

    # activations
    def relu(self, x: str, name: str = "relu") -> str:
        return self.op("Relu", [x], name=name)

    def relu6(self, x: str, name: str = "relu6") -> str:
        return self.op("Clip", [x, self.scalar(0.0, f"{name}.min"), self.scalar(6.0, f"{name}.max")], name=name)

    def silu(self, x: str, name: str = "act") -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x], name=f"{name}.sigmoid")], name=f"{name}.mul")

    def hardswish(self, x: str, name: str = "hardswish") -> str:
        return self.op("HardSwish", [x], name=name)

    def gelu_erf(self, x: str, name: str = "gelu") -> str:
        """x * 0.5 * (1 + erf(x / sqrt(2))), as the Paddle and TorchScript exporters write it."""
        d = self.op("Div", [x, self.scalar(math.sqrt(2.0), f"{name}.sqrt2")], name=f"{name}.div")
        e = self.op("Erf", [d], name=f"{name}.erf")
        a = self.op("Add", [e, self.scalar(1.0, f"{name}.one")], name=f"{name}.add")
        m = self.op("Mul", [x, a], name=f"{name}.mul")
        return self.op("Mul", [m, self.scalar(0.5, f"{name}.half")], name=f"{name}.mul_half")

    # pooling and shape
    def _pool(self, op_type: str, x: str, k: int, stride: int, pad: int, name: str) -> str:
        c, spatial = self.meta[x]
        nd = len(spatial)
        out_sp = tuple((s + 2 * pad - k) // stride + 1 for s in spatial)
        return self.op(
            op_type, [x], name=name, meta=(c, out_sp), kernel_shape=[k] * nd, strides=[stride] * nd, pads=[pad] * 2 * nd
        )

    def maxpool(self, x: str, k: int = 2, stride: int | None = None, pad: int = 0, name: str = "maxpool") -> str:
        return self._pool("MaxPool", x, k, stride or k, pad, name)

    def avgpool(self, x: str, k: int = 2, stride: int | None = None, pad: int = 0, name: str = "avgpool") -> str:
        return self._pool("AveragePool", x, k, stride or k, pad, name)

    def gap(self, x: str, name: str = "avgpool", op_type: str = "GlobalAveragePool") -> str:
        c, spatial = self.meta[x]
        return self.op(op_type, [x], name=name, meta=(c, (1,) * len(spatial)))

    def flatten(self, x: str, name: str = "flatten") -> str:
        c, spatial = self.meta[x]
        return self.op("Flatten", [x], name=name, meta=(c * math.prod(spatial), ()), axis=1)

    def concat(self, xs: Sequence[str], name: str = "cat") -> str:
        c = sum(self.channels(x) for x in xs)
        return self.op("Concat", xs, name=name, meta=(c, self.meta[xs[0]][1]), axis=1)

    def split(self, x: str, sizes: Sequence[int], name: str = "split") -> list[str]:
        n = self.new_name(name)
        outs = self.op("Split", [x, self.ints(sizes, f"{name}.sizes")], full_name=n, outputs=len(sizes), axis=1)
        for o, s in zip(outs, sizes):
            self.meta[o] = (s, self.meta[x][1])
        return outs

    def slice_channels(self, x: str, start: int, end: int, name: str = "slice") -> str:
        c, spatial = self.meta[x]
        stop = min(end, c)
        bounds = [self.ints([v], f"{name}.{k}") for k, v in (("starts", start), ("ends", end), ("axes", 1))]
        return self.op("Slice", [x, *bounds], name=name, meta=(stop - start, spatial))

    def add(self, a: str, b: str, name: str = "add") -> str:
        return self.op("Add", [a, b], name=name)

    def resize(self, x: str, scale: int = 2, name: str = "resize") -> str:
        c, spatial = self.meta[x]
        scales = self.param(f"{name}.scales", np.array([1.0, 1.0] + [float(scale)] * len(spatial), np.float32),
                            keep_dtype=True)
        return self.op(
            "Resize", [x, "", scales], name=name, meta=(c, tuple(s * scale for s in spatial)), mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        )

    # composite
    def conv_bn_act(self, x: str, cout: int, k: int = 3, *, stride: int = 1, group: int = 1, act: str = "relu",
                    name: str = "", gamma: tuple[float, float] = (0.5, 1.5)) -> str:
        """Conv (no bias) -> BatchNormalization -> activation, named ``{name}.0/.1/.2`` like torch Sequentials."""
        p = f"{name}." if name else ""
        y = self.conv(x, cout, k, stride=stride, group=group, bias=False, name=f"{p}0")
        y = self.bn(y, name=f"{p}1", gamma=gamma)
        if act == "relu":
            return self.relu(y, f"{p}2")
        if act == "relu6":
            return self.relu6(y, f"{p}2")
        if act == "hardswish":
            return self.hardswish(y, f"{p}2")
        if act == "silu":
            return self.silu(y, f"{p}act")
        assert act == "none", act
        return y


def _divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


# ==================================================================== ResNet
def _basic_block(b: GraphBuilder, x: str, width: int, stride: int) -> str:
    y = b.relu(b.bn(b.conv(x, width, 3, stride=stride, bias=False, name="conv1"), name="bn1"))
    y = b.bn(b.conv(y, width, 3, bias=False, name="conv2"), name="bn2", gamma=(0.2, 0.6))
    return b.relu(b.add(y, _shortcut(b, x, width, stride)))


def _bottleneck(b: GraphBuilder, x: str, width: int, stride: int) -> str:
    y = b.relu(b.bn(b.conv(x, width, 1, bias=False, name="conv1"), name="bn1"))
    y = b.relu(b.bn(b.conv(y, width, 3, stride=stride, bias=False, name="conv2"), name="bn2"))
    y = b.bn(b.conv(y, width * 4, 1, bias=False, name="conv3"), name="bn3", gamma=(0.2, 0.6))
    return b.relu(b.add(y, _shortcut(b, x, width * 4, stride)))


def _shortcut(b: GraphBuilder, x: str, cout: int, stride: int) -> str:
    if stride == 1 and b.channels(x) == cout:
        return x
    with b.scope("downsample"):
        return b.bn(b.conv(x, cout, 1, stride=stride, bias=False, name="0"), name="1")


def resnet(
    *,
    block: str = "basic",
    layers: Sequence[int] = (2, 2, 2, 2),
    widths: Sequence[int] = (64, 128, 256, 512),
    stem: int = 64,
    image: int = 224,
    num_classes: int = 1000,
    imagenet_stem: bool = True,
    seed: int = 0,
    name: str = "resnet",
) -> onnx.ModelProto:
    """torchvision's ResNet layout; ``imagenet_stem=False`` uses a 3x3 stride-1 stem without max pool."""
    b = GraphBuilder(name, seed=seed)
    x = b.input((3, image, image))
    if imagenet_stem:
        x = b.conv(x, stem, 7, stride=2, bias=False, name="conv1")
    else:
        x = b.conv(x, stem, 3, bias=False, name="conv1")
    x = b.relu(b.bn(x, name="bn1"))
    if imagenet_stem:
        x = b.maxpool(x, 3, 2, 1, name="maxpool")
    make = {"basic": _basic_block, "bottleneck": _bottleneck}[block]
    for i, (n, w) in enumerate(zip(layers, widths)):
        for j in range(n):
            with b.scope(f"layer{i + 1}.{j}"):
                x = make(b, x, w, 2 if (j == 0 and i > 0) else 1)
    x = b.flatten(b.gap(x, "avgpool"))
    b.output(b.gemm(x, num_classes, name="fc", gain=1.0), "logits")
    return b.model()


def resnet18(width: int = 64, image: int = 224, num_classes: int = 1000) -> onnx.ModelProto:
    """ResNet-18 (11.7M parameters at width 64); ``width`` scales every stage."""
    return resnet(block="basic", layers=(2, 2, 2, 2), widths=[width * m for m in (1, 2, 4, 8)], stem=width,
                  image=image, num_classes=num_classes, name="resnet18")


def resnet50(width: int = 64, image: int = 224, num_classes: int = 1000) -> onnx.ModelProto:
    """ResNet-50 with bottleneck blocks (25.6M parameters at width 64)."""
    return resnet(block="bottleneck", layers=(3, 4, 6, 3), widths=[width * m for m in (1, 2, 4, 8)], stem=width,
                  image=image, num_classes=num_classes, name="resnet50")


# ==================================================================== MobileNet V2
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))


def _inverted_residual(b: GraphBuilder, x: str, cout: int, stride: int, expand: int) -> str:
    cin = b.channels(x)
    hidden = int(round(cin * expand))
    y, i = x, 0
    if expand != 1:
        y = b.conv_bn_act(y, hidden, 1, act="relu6", name=f"conv.{i}")
        i += 1
    y = b.conv_bn_act(y, hidden, 3, stride=stride, group=hidden, act="relu6", name=f"conv.{i}")
    y = b.conv(y, cout, 1, bias=False, name=f"conv.{i + 1}")
    y = b.bn(y, name=f"conv.{i + 2}", gamma=(0.3, 0.8))
    return b.add(x, y) if stride == 1 and cin == cout else y


def mobilenet_v2(
    width_mult: float = 1.0,
    image: int = 224,
    num_classes: int = 1000,
    *,
    settings: Sequence[tuple[int, int, int, int]] = MBV2_SETTINGS,
    stem: int = 32,
    last: int = 1280,
    seed: int = 0,
    name: str = "mobilenet_v2",
) -> onnx.ModelProto:
    """torchvision's MobileNetV2 layout (3.5M parameters at width 1.0); ``settings`` rows are (t, c, n, s)."""
    b = GraphBuilder(name, seed=seed)
    x = b.input((3, image, image))
    with b.scope("features"):
        x = b.conv_bn_act(x, _divisible(stem * width_mult), 3, stride=2, act="relu6", name="0")
        idx = 1
        for t, c, n, s in settings:
            for i in range(n):
                with b.scope(str(idx)):
                    x = _inverted_residual(b, x, _divisible(c * width_mult), s if i == 0 else 1, t)
                idx += 1
        x = b.conv_bn_act(x, _divisible(last * max(1.0, width_mult)), 1, act="relu6", name=str(idx))
    x = b.flatten(b.gap(x, "avgpool"))
    x = b.op("Dropout", [x], name="classifier.0")
    b.output(b.gemm(x, num_classes, name="classifier.1", gain=1.0), "logits")
    return b.model()


# ==================================================================== small examples
def vgg() -> onnx.ModelProto:
    b = GraphBuilder("vgg", seed=1)
    x = b.input((3, 32, 32))
    with b.scope("features"):
        for i, (c, pool) in enumerate([(8, False), (16, True), (32, False), (32, True), (64, True)]):
            x = b.conv_bn_act(x, c, name=str(i))
            if pool:
                x = b.maxpool(x, 2, name=f"pool{i}")
    x = b.flatten(x)  # 64 x 4 x 4 -> 1024 features
    with b.scope("classifier"):
        x = b.relu(b.gemm(x, 64, name="0"), "1")
        x = b.gemm(x, 10, name="2", gain=1.0)
    b.output(x, "logits")
    return b.model()


def resnet_basic() -> onnx.ModelProto:
    return resnet(block="basic", layers=(2, 1, 1), widths=(8, 16, 32), stem=8, image=32, num_classes=10,
                  imagenet_stem=False, seed=2, name="resnet_basic")


def resnet_bottleneck() -> onnx.ModelProto:
    return resnet(block="bottleneck", layers=(1, 2), widths=(8, 16), stem=16, image=32, num_classes=10,
                  imagenet_stem=False, seed=3, name="resnet_bottleneck")


def mobilenet_v2_small() -> onnx.ModelProto:
    return mobilenet_v2(image=32, num_classes=10, settings=((1, 8, 1, 1), (3, 16, 2, 2), (3, 24, 2, 2), (3, 32, 2, 1)),
                        stem=16, last=64, seed=4, name="mobilenet_v2_small")


def mobilenet_v3() -> onnx.ModelProto:
    """MobileNetV3-small-like: SE blocks, HardSwish, HardSigmoid gates; one SE squeezes with ReduceMean."""
    b = GraphBuilder("mobilenet_v3", seed=5)
    x = b.input((3, 32, 32))
    # kernel, expanded, out, squeeze-excite, activation, stride
    cfg = [(3, 16, 16, True, "relu", 2), (3, 32, 16, False, "relu", 1), (3, 48, 24, False, "relu", 2),
           (5, 48, 24, True, "hardswish", 1), (5, 64, 32, True, "hardswish", 2)]
    with b.scope("features"):
        x = b.conv_bn_act(x, 16, 3, stride=2, act="hardswish", name="0")
        for idx, (k, exp, out, se, act, stride) in enumerate(cfg, start=1):
            with b.scope(f"{idx}.block"):
                cin, y, i = b.channels(x), x, 0
                if exp != cin:
                    y = b.conv_bn_act(y, exp, 1, act=act, name=str(i))
                    i += 1
                y = b.conv(y, exp, k, stride=stride, group=exp, bias=False, name=f"{i}.0")
                y = b.bn(y, name=f"{i}.1")
                y = b.relu(y, f"{i}.2") if act == "relu" else b.hardswish(y, f"{i}.2")
                i += 1
                if se:
                    with b.scope(str(i)):
                        if idx == 4:
                            s = b.op("ReduceMean", [y], name="avgpool", meta=(exp, (1, 1)), axes=[2, 3], keepdims=1)
                        else:
                            s = b.gap(y, "avgpool")
                        s = b.relu(b.conv(s, _divisible(exp // 4), 1, name="fc1"), "relu")
                        s = b.op("HardSigmoid", [b.conv(s, exp, 1, name="fc2")], name="scale_activation",
                                 alpha=1.0 / 6, beta=0.5)
                        y = b.op("Mul", [y, s], name="scale")
                    i += 1
                y = b.conv_bn_act(y, out, 1, act="none", name=str(i), gamma=(0.3, 0.8))
                x = b.add(y, x) if stride == 1 and cin == out else y
        x = b.conv_bn_act(x, 64, 1, act="hardswish", name=str(len(cfg) + 1))
    x = b.flatten(b.gap(x, "avgpool"))
    with b.scope("classifier"):
        x = b.hardswish(b.gemm(x, 64, name="0"), "1")
        x = b.op("Dropout", [x], name="2")
        x = b.gemm(x, 10, name="3", gain=1.0)
    b.output(x, "logits")
    return b.model()


def densenet() -> onnx.ModelProto:
    """DenseNet-like: BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 layers concatenated onto their input."""
    b = GraphBuilder("densenet", seed=6)
    growth, bn_size = 8, 2
    x = b.input((3, 32, 32))
    with b.scope("features"):
        x = b.conv(x, 16, 3, bias=False, name="conv0")
        blocks = (3, 3)
        for bi, n in enumerate(blocks, start=1):
            for li in range(1, n + 1):
                with b.scope(f"denseblock{bi}.denselayer{li}"):
                    y = b.relu(b.bn(x, name="norm1"), "relu1")
                    y = b.conv(y, bn_size * growth, 1, bias=False, name="conv1")
                    y = b.relu(b.bn(y, name="norm2"), "relu2")
                    y = b.conv(y, growth, 3, bias=False, name="conv2")
                    x = b.concat([x, y], "cat")
            if bi != len(blocks):
                with b.scope(f"transition{bi}"):
                    y = b.relu(b.bn(x, name="norm"), "relu")
                    y = b.conv(y, b.channels(x) // 2, 1, bias=False, name="conv")
                    x = b.avgpool(y, 2, name="pool")
        x = b.relu(b.bn(x, name="norm5"), "relu5")
    x = b.flatten(b.gap(x, "avgpool"))
    b.output(b.gemm(x, 10, name="classifier", gain=1.0), "logits")
    return b.model()


def _c2f(b: GraphBuilder, x: str, cout: int, n: int, shortcut: bool = True) -> str:
    c = cout // 2
    y = b.split(b.conv_bn_act(x, 2 * c, 1, act="silu", name="cv1"), [c, c], "split")
    for i in range(n):
        with b.scope(f"m.{i}"):
            z = b.conv_bn_act(y[-1], c, 3, act="silu", name="cv1")
            z = b.conv_bn_act(z, c, 3, act="silu", name="cv2", gamma=(0.3, 0.8))
            y.append(b.add(y[-1], z) if shortcut else z)
    return b.conv_bn_act(b.concat(y, "cat"), cout, 1, act="silu", name="cv2")


def _sppf(b: GraphBuilder, x: str, cout: int) -> str:
    y = [b.conv_bn_act(x, b.channels(x) // 2, 1, act="silu", name="cv1")]
    for i in range(3):
        y.append(b.maxpool(y[-1], 5, 1, 2, name="m"))
    return b.conv_bn_act(b.concat(y, "cat"), cout, 1, act="silu", name="cv2")


def yolov8_c2f() -> onnx.ModelProto:
    """YOLOv8-like backbone (Conv-BN-SiLU, C2f, SPPF) with a head that Slices its channels."""
    b = GraphBuilder("yolov8_c2f", seed=7)
    x = b.input((3, 32, 32))
    with b.scope("model"):
        x = b.conv_bn_act(x, 16, 3, stride=2, act="silu", name="0")
        x = b.conv_bn_act(x, 32, 3, stride=2, act="silu", name="1")
        with b.scope("2"):
            x = _c2f(b, x, 32, 1)
        x = b.conv_bn_act(x, 64, 3, stride=2, act="silu", name="3")
        with b.scope("4"):
            x = _c2f(b, x, 64, 2)
        with b.scope("5"):
            x = _sppf(b, x, 64)
        with b.scope("6"):  # detect-like head: one conv, its channels sliced into box and class parts
            y = b.conv_bn_act(x, 48, 3, act="silu", name="cv")
            box = b.conv(b.slice_channels(y, 0, 16, "box_slice"), 16, 1, name="box")
            cls = b.slice_channels(y, 16, np.iinfo(np.int64).max, "cls_slice")
            cls = b.op("Sigmoid", [b.conv(cls, 8, 1, name="cls")], name="cls_sigmoid")
            x = b.concat([box, cls], "out")
    b.output(x, "output")
    return b.model()


def unet() -> onnx.ModelProto:
    """Small U-Net: ConvTranspose up-sampling in one stage, nearest Resize in the other, Concat skips."""
    b = GraphBuilder("unet", seed=8)
    x = b.input((3, 32, 32))

    def double(x: str, c: int, name: str) -> str:
        with b.scope(name):
            return b.conv_bn_act(b.conv_bn_act(x, c, name="0"), c, name="1")

    e1 = double(x, 8, "enc1")
    e2 = double(b.maxpool(e1, 2, name="pool1"), 16, "enc2")
    mid = double(b.maxpool(e2, 2, name="pool2"), 32, "bottleneck")
    d2 = double(b.concat([b.conv_transpose(mid, 16, name="up2"), e2], "cat2"), 16, "dec2")
    d1 = double(b.concat([b.resize(d2, 2, "up1"), e1], "cat1"), 8, "dec1")
    b.output(b.conv(d1, 2, 1, name="head"), "output")
    return b.model()


def conv_flatten_gemm() -> onnx.ModelProto:
    """Conv -> Relu -> Flatten of an 8x8 map (each channel owns 64 Gemm inputs) -> Gemm."""
    b = GraphBuilder("conv_flatten_gemm", seed=9)
    x = b.input((3, 32, 32))
    x = b.relu(b.conv(x, 8, 3, stride=2, name="conv1"))
    x = b.relu(b.conv(x, 16, 3, stride=2, name="conv2"))
    x = b.relu(b.gemm(b.flatten(x), 32, name="fc1"))
    b.output(b.gemm(x, 10, name="fc2", gain=1.0), "logits")
    return b.model()


def conv_reshape_matmul() -> onnx.ModelProto:
    """Conv -> Relu -> Reshape to [-1, C*H*W] -> MatMul with an [in, out] weight -> Add bias."""
    b = GraphBuilder("conv_reshape_matmul", seed=10)
    x = b.input((3, 32, 32))
    x = b.relu(b.conv(x, 8, 3, stride=2, name="conv1"))
    x = b.relu(b.conv(x, 16, 3, stride=2, name="conv2"))
    c, spatial = b.meta[x]
    features = c * math.prod(spatial)
    x = b.op("Reshape", [x, b.ints([-1, features], "reshape.shape")], name="reshape", meta=(features, ()))
    x = b.relu(b.linear_matmul(x, 32, name="fc1"))
    b.output(b.linear_matmul(x, 10, name="fc2", gain=1.0), "logits")
    return b.model()


def paddle_style() -> onnx.ModelProto:
    """Paddle-exporter habits: Constant-node weights behind Identity nodes, a weight shared by two
    Convs, unfused BatchNormalization, GELU written out with Erf, and the classifier's flatten as a Reshape
    to a target computed in int32: `Concat(Cast(Slice(Cast(Shape(x), int32))), Cast(int32 [C]))`."""
    b = GraphBuilder("paddle_style", seed=11, constant_weights=True, identity_weights=True)
    x = b.input((3, 32, 32))
    x = b.conv(x, 16, 3, stride=2, name="conv2d_0")
    x = b.gelu_erf(b.bn(x, name="batch_norm_0"), "gelu_0")
    shared = b.param("conv2d_1.w_0", b.he((16, 16, 3, 3), 16 * 9))
    a = b.conv(x, 0, 3, weight=shared, name="conv2d_1")
    c = b.conv(b.op("Relu", [x], name="relu_0"), 0, 3, weight=shared, name="conv2d_2")
    x = b.op("Add", [a, c], name="elementwise_add_0")
    x = b.gelu_erf(b.bn(x, name="batch_norm_1"), "gelu_1")
    x = b.conv(x, 32, 3, stride=2, name="conv2d_3")
    x = b.op("Mul", [x, b.scalar(0.5, "scale_0.scale")], name="scale_0")
    x = b.relu(b.bn(x, name="batch_norm_2"), "relu_1")
    x = b.gap(x, "pool2d_0")
    int32, int64 = onnx.TensorProto.INT32, onnx.TensorProto.INT64
    shape = b.op("Cast", [b.op("Shape", [x], name="shape_0")], name="shape_0.cast", to=int32)
    bounds = [b.param(f"shape_0.slice.{k}", np.array([v], np.int32), keep_dtype=True)
              for k, v in (("starts", 0), ("ends", 1), ("axes", 0))]
    batch = b.op("Cast", [b.op("Slice", [shape, *bounds], name="shape_0.slice")], name="shape_0.batch", to=int64)
    count = b.param("fill_constant_0", np.array([b.channels(x)], np.int32), keep_dtype=True)
    target = b.op("Concat", [batch, b.op("Cast", [count], name="fill_constant_0.cast", to=int64)], name="concat_0",
                  axis=0)
    x = b.op("Reshape", [x, target], name="reshape2_0", meta=(b.channels(x), ()))
    b.output(b.linear_matmul(x, 10, name="linear_0", gain=1.0), "logits")
    return b.model()


def _head(b: GraphBuilder, x: str, classes: int = 10) -> str:
    return b.output(b.gemm(b.flatten(b.gap(x, "head.pool")), classes, name="head.fc", gain=1.0), "logits")


def ops_zoo() -> onnx.ModelProto:
    """One chain through the remaining channel-local op families (opset 17)."""
    b = GraphBuilder("ops_zoo", seed=12)
    x = b.input((3, 32, 32))
    x = b.op("LeakyRelu", [b.bn(b.conv(x, 16, 3, name="stem"), name="stem_bn")], name="leaky_relu", alpha=0.1)
    x = b.instance_norm(b.conv(x, 16, 3, group=4, name="grouped_conv"), name="instance_norm")
    x = b.op("PRelu", [x, b.param("prelu.slope", b.rng.uniform(0.05, 0.3, (16, 1, 1)))], name="prelu")
    # elementwise arithmetic with per-channel [1,C,1,1] constants and with scalars, constants on either side
    for i, op_type in enumerate(["Add", "Sub", "Mul", "Div"] * 2):
        per_channel = (i % 2 == 0) == (i < 4)
        shape = (1, 16, 1, 1) if per_channel else ()
        value = b.rng.uniform(0.5, 1.5, shape) if op_type in ("Mul", "Div") else b.rng.normal(0, 0.2, shape)
        c = b.param(f"{op_type.lower()}_{i}.const", value)
        ins = [c, x] if op_type == "Sub" and i >= 4 else [x, c]
        x = b.op(op_type, ins, name=f"{op_type.lower()}_{i}")
    acts: list[tuple[str, dict]] = [
        ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}), ("Tanh", {}), ("Elu", {"alpha": 1.0}),
        ("Selu", {}), ("Softplus", {}),
    ]
    for i, (op_type, attrs) in enumerate(acts):
        x = b.op(op_type, [b.conv(x, 16, 3, name=f"conv{i}")], name=op_type.lower(), **attrs)
        if op_type == "Tanh":
            x = b.maxpool(x, 3, 1, 1, name="maxpool")
        if op_type == "Elu":
            x = b.avgpool(x, 2, name="avgpool")
    # Pad on spatial axes only, then a pad-less conv
    c, spatial = b.meta[x]
    x = b.op("Pad", [x, b.ints([0, 0, 1, 1, 0, 0, 1, 1], "pad.pads")], name="pad", mode="reflect",
             meta=(c, tuple(s + 2 for s in spatial)))
    x = b.conv(x, 24, 3, pad=0, name="conv_after_pad")
    x = b.op("Identity", [b.op("Dropout", [x], name="dropout")], name="identity")
    x = b.op("Cast", [b.op("Cast", [x], name="to_fp16", to=onnx.TensorProto.FLOAT16)], name="to_fp32",
             to=onnx.TensorProto.FLOAT)
    x = b.relu(x)
    # head 1: GlobalMaxPool -> Flatten -> Gemm;  head 2: GlobalAveragePool -> Squeeze -> MatMul + Add
    b.output(b.gemm(b.flatten(b.gap(x, "gmp", "GlobalMaxPool")), 10, name="fc_max", gain=1.0), "logits_max")
    s = b.gap(x, "gap")
    s = b.op("Squeeze", [s, b.ints([2, 3], "squeeze.axes")], name="squeeze", meta=(b.channels(s), ()))
    b.output(b.linear_matmul(s, 10, name="fc_avg", gain=1.0), "logits")
    return b.model()


def ops_conv1d() -> onnx.ModelProto:
    b = GraphBuilder("ops_conv1d", seed=13)
    x = b.input((3, 64))
    x = b.relu(b.bn(b.conv(x, 16, 5, name="conv1"), name="bn1"))
    x = b.maxpool(x, 2, name="pool")
    x = b.relu(b.bn(b.conv(x, 32, 3, stride=2, bias=False, name="conv2"), name="bn2"))
    _head(b, x)
    return b.model()


def ops_conv3d() -> onnx.ModelProto:
    b = GraphBuilder("ops_conv3d", seed=14)
    x = b.input((3, 8, 16, 16))
    x = b.relu(b.bn(b.conv(x, 8, 3, name="conv1"), name="bn1"))
    x = b.maxpool(x, 2, name="pool")
    x = b.relu(b.bn(b.conv(x, 16, 3, bias=False, name="conv2"), name="bn2"))
    _head(b, x)
    return b.model()


def ops_opset20() -> onnx.ModelProto:
    """Ops newer than opset 17: Gelu (exact and tanh), Mish, Pad with an axes input (IR version 9)."""
    b = GraphBuilder("ops_opset20", seed=15)
    x = b.input((3, 32, 32))
    x = b.op("Gelu", [b.bn(b.conv(x, 16, 3, name="conv1"), name="bn1")], name="gelu")
    x = b.op("Mish", [b.conv(x, 16, 3, stride=2, name="conv2")], name="mish")
    x = b.op("Pad", [x, b.ints([1, 1, 1, 1], "pad.pads"), "", b.ints([2, 3], "pad.axes")], name="pad",
             meta=(16, tuple(s + 2 for s in b.meta[x][1])))
    x = b.op("Gelu", [b.conv(x, 24, 3, pad=0, name="conv3")], name="gelu_tanh", approximate="tanh")
    _head(b, x)
    return b.model(opset=20, ir_version=9)


def fp16() -> onnx.ModelProto:
    """A small conv net whose weights, input and output are float16."""
    b = GraphBuilder("fp16", seed=16, dtype=np.float16)
    x = b.input((3, 32, 32))
    x = b.conv_bn_act(x, 16, name="block1")
    x = b.maxpool(x, 2, name="pool1")
    x = b.conv_bn_act(x, 32, name="block2")
    y = b.conv_bn_act(x, 32, name="block3", gamma=(0.3, 0.8))
    x = b.relu(b.add(x, y))
    _head(b, x)
    return b.model()


EXAMPLES: dict[str, Callable[[], onnx.ModelProto]] = {
    "vgg": vgg,
    "resnet_basic": resnet_basic,
    "resnet_bottleneck": resnet_bottleneck,
    "mobilenet_v2": mobilenet_v2_small,
    "mobilenet_v3": mobilenet_v3,
    "densenet": densenet,
    "yolov8_c2f": yolov8_c2f,
    "unet": unet,
    "conv_flatten_gemm": conv_flatten_gemm,
    "conv_reshape_matmul": conv_reshape_matmul,
    "paddle_style": paddle_style,
    "ops_zoo": ops_zoo,
    "ops_conv1d": ops_conv1d,
    "ops_conv3d": ops_conv3d,
    "ops_opset20": ops_opset20,
    "fp16": fp16,
}

FULL_SIZE: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
}


def save_all(folder: str | Path) -> list[Path]:
    """Writes every EXAMPLES model as ``folder/<name>.onnx``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in EXAMPLES.items():
        path = folder / f"{name}.onnx"
        onnx.save(build(), path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in save_all(sys.argv[1] if len(sys.argv) > 1 else "out/models"):
        print(p)
