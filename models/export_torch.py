"""Regenerates the committed PyTorch-exported example models under models/.

Torch is needed only to run this script, never by onnxprune or its tests.  Install the CPU build
into the project's virtualenv (plus onnxscript for the dynamo exporter) and run it from the
repository root:

    .venv/bin/pip install torch==2.13.0 onnxscript
    .venv/bin/python -m models.export_torch            # writes models/*_ts.onnx, models/*_dynamo.onnx

Files written (random weights, seeded; every file self-contained and well under 1 MB):

- resnet_tiny_ts.onnx          TorchScript exporter, dynamic batch; ends in ``x.view(x.size(0), -1)``
                               so the graph has Shape -> Gather -> Unsqueeze -> Concat -> Reshape
- resnet_tiny_dynamo.onnx      the same module through the dynamo (torch.export) exporter
- mobilenetv2_tiny_ts.onnx     eval export: the exporter folds BatchNormalization into the Convs
- mobilenetv2_tiny_ts_bn.onnx  TrainingMode.PRESERVE on an eval module: BatchNormalization stays
- c2f_tiny_ts.onnx             YOLOv8-style Conv-BN-SiLU (BN folded) / C2f / SPPF network; C2f splits its
                               channels with split() as Ultralytics' export does: a Split node
- c2f_tiny_chunk_ts.onnx       the same with chunk(): Shape -> Gather -> Div computes Slice bounds from
                               the channel count
- unet_tiny_ts.onnx            U-Net with dynamic height and width: each decoder step F.pads the upsampled
                               tensor to its skip's size (pads computed from both shapes) and concatenates;
                               an FPN-style sum resizes to `size=y.shape[-2:]` (sizes read at run time)
- effnet_same_tiny_ts.onnx     EfficientNet blocks with TensorFlow "same" padding computed from the input's
                               size (timm's tf_* models), dynamic height and width; squeeze-excite
- effnet_same_tiny_dynamo.onnx the same through the dynamo exporter (float Ceil in the pad arithmetic)
- crnn_tiny_ts.onnx            text-line recognizer: convs, a 2-layer bidirectional LSTM and a GRU over the
                               columns of a line of dynamic width; zero initial states built from the batch size
- crnn_tiny_dynamo.onnx        the same through the dynamo exporter, width 64 (a dynamic width exports a
                               Reshape that only runs at the traced width); the directions merge by a
                               Reshape whose last entry multiplies two entries of the output's Shape
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 17


def _randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics, so fused and unfused exports really differ from identity."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)


# ------------------------------------------------------------------ ResNet
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetTiny(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width))
        self.layer3 = nn.Sequential(BasicBlock(2 * width, 4 * width, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)


# ------------------------------------------------------------------ MobileNetV2
def _conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [_conv_bn_relu6(cin, hidden, 1)]
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Tiny(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 16, 3, 2)]
        cin = 16
        for t, c, n, s in ((1, 8, 1, 1), (3, 16, 2, 2), (3, 24, 2, 2), (3, 32, 2, 1)):
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu6(cin, 64, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# ------------------------------------------------------------------ YOLOv8-style C2f
class ConvBnSiLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = ConvBnSiLU(c, c, 3)
        self.cv2 = ConvBnSiLU(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True, chunk: bool = False) -> None:
        super().__init__()
        self.c = cout // 2
        self.chunk = chunk
        self.cv1 = ConvBnSiLU(cin, 2 * self.c, 1)
        self.cv2 = ConvBnSiLU((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Ultralytics exports with split() (a Split node); chunk() exports as Shape-computed Slices.
        y = list(self.cv1(x).chunk(2, 1) if self.chunk else self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 5) -> None:
        super().__init__()
        self.cv1 = ConvBnSiLU(cin, cin // 2, 1)
        self.cv2 = ConvBnSiLU(cin // 2 * 4, cout, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class C2fTiny(nn.Module):
    def __init__(self, num_outputs: int = 24, chunk: bool = False) -> None:
        super().__init__()
        self.model = nn.Sequential(
            ConvBnSiLU(3, 16, 3, 2), ConvBnSiLU(16, 32, 3, 2), C2f(32, 32, 1, chunk=chunk), ConvBnSiLU(32, 64, 3, 2),
            C2f(64, 64, 2, chunk=chunk), SPPF(64, 64),
        )
        self.head = nn.Conv2d(64, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.model(x))
        box, cls = y[:, :16], y[:, 16:]  # channel Slices, as detection heads do
        return torch.cat([box, cls.sigmoid()], 1)


# ------------------------------------------------------------------ sizes computed in the graph
def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UpPadCat(nn.Module):
    """U-Net decoder step: upsample, F.pad to the skip's size (computed from both tensors' shapes), concat."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = _conv_bn_relu(cin + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy, dx = skip.size()[2] - x.size()[2], skip.size()[3] - x.size()[3]
        x = nn.functional.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNetTiny(nn.Module):
    def __init__(self, num_outputs: int = 2) -> None:
        super().__init__()
        self.inc, self.down1, self.down2 = _conv_bn_relu(3, 8), _conv_bn_relu(8, 16), _conv_bn_relu(16, 32)
        self.up1, self.up2 = UpPadCat(32, 16, 16), UpPadCat(16, 8, 8)
        self.top = nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(8, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inc(x)
        b = self.down1(nn.functional.max_pool2d(a, 2))
        c = self.down2(nn.functional.max_pool2d(b, 2))
        y = self.up2(self.up1(c, b), a)
        # an FPN-style lateral sum: resized to the size of another tensor, read at run time
        y = y + nn.functional.interpolate(self.top(nn.functional.max_pool2d(y, 2)), size=y.shape[-2:], mode="nearest")
        return self.out(y)


def _same_pad(size: int, k: int, s: int) -> int:
    return max((-(-size // s) - 1) * s + k - size, 0)


class Conv2dSame(nn.Conv2d):
    """TensorFlow's SAME padding computed from the input's size, as timm's tf_* models do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph = _same_pad(x.size()[-2], self.kernel_size[0], self.stride[0])
        pw = _same_pad(x.size()[-1], self.kernel_size[1], self.stride[1])
        x = nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvSame(nn.Module):
    """EfficientNet block with SAME padding: expand 1x1, depthwise (stride 2), squeeze-excite, project 1x1."""

    def __init__(self, cin: int, cout: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.dw = nn.Sequential(Conv2dSame(mid, mid, 3, 2, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, mid // 4, 1), nn.SiLU(),
                                nn.Conv2d(mid // 4, mid, 1), nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(self.expand(x))
        return self.project(h * self.se(h))


class EffNetSameTiny(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(Conv2dSame(3, 16, 3, 2, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(MBConvSame(16, 24), MBConvSame(24, 32))
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


# ------------------------------------------------------------------ CRNN (text-line recognizer)
class CRNNTiny(nn.Module):
    """Conv features of a 32-pixel-high line, height pooled to 1, read left to right by a 2-layer bidirectional
    LSTM and a GRU, one class vector per column (CTC-style). nn.LSTM without (h0, c0) exports a zero state of the
    batch size (ConstantOfShape), sliced per layer; the directions merge by Transpose -> Reshape [T, N, 2H]."""

    def __init__(self, num_classes: int = 12) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(3, 16), nn.MaxPool2d(2), _conv_bn_relu(16, 32), nn.MaxPool2d(2),
            _conv_bn_relu(32, 48), nn.MaxPool2d((8, 1)),
        )
        self.lstm = nn.LSTM(48, 32, num_layers=2, bidirectional=True)
        self.gru = nn.GRU(64, 24)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).squeeze(2).permute(2, 0, 1)  # [W/4, N, 48]
        y, _ = self.lstm(f)
        y, _ = self.gru(y)
        return self.head(y)


# ------------------------------------------------------------------ export
def _build(cls: type[nn.Module], seed: int, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = cls(**kwargs)
    _randomize_bn(model, torch.Generator().manual_seed(seed + 1000))
    return model.eval()


def export_ts(model: nn.Module, path: Path, *, output: str = "logits", keep_bn: bool = False,
              spatial: bool = False, line: bool = False) -> None:
    """`spatial`: the image's height and width are dynamic too (the output's as well where it has them); `line`:
    a text line of dynamic width, whose output is [width / 4, N, classes]."""
    x = torch.randn(1, 3, 32, 64 if line else 32)
    sizes = {0: "N", 2: "H", 3: "W"} if spatial else {0: "N", 3: "W"} if line else {0: "N"}
    out_sizes = sizes if spatial and output == "mask" else {0: "T", 1: "N"} if line else {0: "N"}
    torch.onnx.export(
        model, (x,), str(path), dynamo=False, opset_version=OPSET, input_names=["input"], output_names=[output],
        dynamic_axes={"input": sizes, output: out_sizes},
        training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
        do_constant_folding=not keep_bn,
    )


def export_dynamo(model: nn.Module, path: Path, *, output: str = "logits", spatial: bool = False,
                  line: bool = False) -> None:
    x = torch.randn(2, 3, 32, 64 if line else 32)
    sizes = {0: torch.export.Dim("N", min=1, max=1024)}
    if spatial:
        sizes.update({2: torch.export.Dim("H", min=8, max=4096), 3: torch.export.Dim("W", min=8, max=4096)})
    program = torch.onnx.export(
        model, (x,), dynamo=True, input_names=["input"], output_names=[output],
        dynamic_shapes=(sizes,), optimize=True, verify=False,
    )
    program.save(str(path), external_data=False)


def check_export(path: Path) -> None:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({n.op_type for n in model.graph.node})
    size = path.stat().st_size
    print(f"{path.name:30s} {size / 1024:7.1f} KB  opset {model.opset_import[0].version}  ir {model.ir_version}  {ops}")
    assert size < 1 << 20, f"{path} is larger than 1 MB"


def main(out: Path = HERE) -> int:
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        ("resnet_tiny_ts.onnx", lambda p: export_ts(_build(ResNetTiny, 0), p)),
        ("resnet_tiny_dynamo.onnx", lambda p: export_dynamo(_build(ResNetTiny, 0), p)),
        ("mobilenetv2_tiny_ts.onnx", lambda p: export_ts(_build(MobileNetV2Tiny, 1), p)),
        ("mobilenetv2_tiny_ts_bn.onnx", lambda p: export_ts(_build(MobileNetV2Tiny, 1), p, keep_bn=True)),
        ("c2f_tiny_ts.onnx", lambda p: export_ts(_build(C2fTiny, 2), p, output="output")),
        ("c2f_tiny_chunk_ts.onnx", lambda p: export_ts(_build(C2fTiny, 2, chunk=True), p, output="output")),
        ("unet_tiny_ts.onnx", lambda p: export_ts(_build(UNetTiny, 3), p, output="mask", spatial=True)),
        ("effnet_same_tiny_ts.onnx", lambda p: export_ts(_build(EffNetSameTiny, 4), p, spatial=True)),
        ("effnet_same_tiny_dynamo.onnx", lambda p: export_dynamo(_build(EffNetSameTiny, 4), p, spatial=True)),
        ("crnn_tiny_ts.onnx", lambda p: export_ts(_build(CRNNTiny, 5), p, line=True)),
        ("crnn_tiny_dynamo.onnx", lambda p: export_dynamo(_build(CRNNTiny, 5), p, line=True)),
    ]
    failed = []
    for name, job in jobs:
        path = out / name
        try:
            job(path)
            check_export(path)
        except Exception as exc:  # report every exporter failure, then fail at the end
            failed.append(name)
            print(f"{name}: export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
