"""torchvision's ResNet-18 and MobileNetV2 as somebody else exported them (PyTorch 1.13, opset 14, BatchNorm
folded): the workload graphs that zigzag-dse ships in its wheel.

The wheel keeps the graphs and the small biases but not the large weights (they point to external files that are
not shipped). Those are filled with seeded He-normal values, so the models run; their latency is the exported
graph's, which is what the latency benchmark needs. Accuracy numbers on them would mean nothing.

    python -m benchmarks.torchvision_exports OUT_DIR   # fetches the wheel with pip, writes both models
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

WHEEL = "zigzag-dse==3.9.1"
IN_WHEEL = {"tv_resnet18": "zigzag/inputs/workload/resnet18.onnx",
            "tv_mobilenet_v2": "zigzag/inputs/workload/mobilenetv2.onnx"}


def _filled(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Every initializer whose data lives in a missing external file gets He-normal values of its shape."""
    rng = np.random.default_rng(seed)
    for i, t in enumerate(model.graph.initializer):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        shape = tuple(t.dims)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else max(1, shape[0])
        values = rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        model.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, t.name))
    return model


def fetch(folder: Path) -> dict[str, Path]:
    """{name: path} of both models, built from the wheel (pip download, nothing installed); cached in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {name: folder / f"{name}.onnx" for name in IN_WHEEL}
    if all(p.exists() for p in out.values()):
        return out
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(folder)],
                   check=True)
    wheel = next(folder.glob("zigzag_dse-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        for seed, (name, member) in enumerate(IN_WHEEL.items()):
            model = onnx.load_from_string(z.read(member))  # external data is never read from bytes
            onnx.save(_filled(model, seed), str(out[name]))
    return out


if __name__ == "__main__":
    for name, path in fetch(Path(sys.argv[1])).items():
        print(name, path)
