"""The example models: every builder in models.zoo and every committed models/*.onnx file is a
valid ONNX model (full checker) that onnxruntime runs to finite outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is not an installed package: import it from the checkout
    sys.path.insert(0, str(ROOT))

from models import zoo  # noqa: E402

# the image models; the transformer exports (tx_*.onnx, token inputs) are checked in test_transformer_exports.py
COMMITTED = sorted(p for p in (ROOT / "models").glob("*.onnx") if not p.name.startswith("tx_"))
MB = 1 << 20


def _run(model: onnx.ModelProto | Path, batch: int = 2) -> list[np.ndarray]:
    data = model.read_bytes() if isinstance(model, Path) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        # a dynamic batch, and 32 for dynamic image sizes (the models exported with dynamic height and width)
        shape = [d if isinstance(d, int) else batch if i == 0 else 32 for i, d in enumerate(inp.shape)]
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return sess.run(None, feeds)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module", params=sorted(zoo.EXAMPLES))
def example(request: pytest.FixtureRequest) -> tuple[str, onnx.ModelProto]:
    return request.param, zoo.EXAMPLES[request.param]()


def test_example_is_valid_and_runs(example: tuple[str, onnx.ModelProto]) -> None:
    name, model = example
    onnx.checker.check_model(model, full_check=True)
    assert model.ByteSize() < MB, f"{name} is {model.ByteSize()} bytes"
    outs = _run(model, batch=3)
    assert outs and all(o.shape[0] == 3 and np.isfinite(o).all() for o in outs)
    assert all(float(np.std(o.astype(np.float32))) > 1e-3 for o in outs), "degenerate (constant) output"


def test_example_conventions(example: tuple[str, onnx.ModelProto]) -> None:
    name, model = example
    (inp,) = model.graph.input
    assert inp.name == "input"
    assert _dims(inp)[0] == "N"
    for out in model.graph.output:
        assert _dims(out)[0] == "N"
    default = {o.domain: o.version for o in model.opset_import}[""]
    assert (default, model.ir_version) in {(17, 8), (20, 9)}
    assert all(n.name for n in model.graph.node), "every node is named"
    names = [n.name for n in model.graph.node]
    assert len(names) == len(set(names))


def test_examples_are_deterministic() -> None:
    for name, build in zoo.EXAMPLES.items():
        assert build().SerializeToString() == build().SerializeToString(), name


def test_batchnorm_is_unfused_and_nontrivial() -> None:
    model = zoo.EXAMPLES["resnet_basic"]()
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert bns
    for bn in bns:
        scale, bias, mean, var = (consts[i] for i in bn.input[1:])
        assert not np.allclose(scale, 1) and not np.allclose(bias, 0) and not np.allclose(mean, 0)
        assert (var > 0).all()


@pytest.mark.parametrize(
    ("name", "ops"),
    [
        ("vgg", {"MaxPool", "Flatten", "Gemm"}),
        ("resnet_basic", {"Add", "GlobalAveragePool", "Flatten", "Gemm"}),
        ("mobilenet_v2", {"Clip", "Add"}),
        ("mobilenet_v3", {"HardSwish", "HardSigmoid", "ReduceMean", "GlobalAveragePool", "Mul"}),
        ("densenet", {"Concat", "AveragePool"}),
        ("yolov8_c2f", {"Split", "Slice", "Concat", "Sigmoid", "Mul", "MaxPool"}),
        ("unet", {"ConvTranspose", "Resize", "Concat"}),
        ("conv_reshape_matmul", {"Reshape", "MatMul", "Add"}),
        ("paddle_style", {"Constant", "Identity", "Erf", "BatchNormalization"}),
        ("ops_zoo", {"InstanceNormalization", "LeakyRelu", "PRelu", "HardSigmoid", "Tanh", "Elu", "Selu",
                     "Softplus", "Sub", "Div", "AveragePool", "GlobalMaxPool", "Pad", "Dropout", "Identity", "Cast",
                     "Squeeze", "MatMul"}),
        ("ops_opset20", {"Gelu", "Mish", "Pad"}),
    ],
)
def test_example_covers_its_ops(name: str, ops: set[str]) -> None:
    assert ops <= {n.op_type for n in zoo.EXAMPLES[name]().graph.node}


def test_depthwise_grouped_and_shared_weights() -> None:
    groups = {
        int(a.i) for n in zoo.EXAMPLES["mobilenet_v2"]().graph.node for a in n.attribute if a.name == "group"
    }
    assert max(groups) > 4  # depthwise: group == channels
    zoo_groups = [a.i for n in zoo.EXAMPLES["ops_zoo"]().graph.node for a in n.attribute if a.name == "group"]
    assert 4 in zoo_groups
    paddle = zoo.EXAMPLES["paddle_style"]()
    assert not paddle.graph.initializer
    weights = [n.input[1] for n in paddle.graph.node if n.op_type == "Conv"]
    assert len(weights) != len(set(weights)), "one weight is shared by two Convs"


def test_fp16_example_is_float16() -> None:
    model = zoo.EXAMPLES["fp16"]()
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT16}


def test_save_all(tmp_path: Path) -> None:
    paths = zoo.save_all(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{n}.onnx" for n in zoo.EXAMPLES)
    onnx.checker.check_model(str(paths[0]), full_check=True)


@pytest.mark.parametrize(
    ("build", "params"),
    [(zoo.resnet18, 11_689_512), (zoo.resnet50, 25_557_032), (zoo.mobilenet_v2, 3_504_872)],
    ids=["resnet18", "resnet50", "mobilenet_v2"],
)
def test_full_size_layouts_match_torchvision_parameter_counts(build, params: int) -> None:
    model = build()
    # trainable parameters only: BatchNorm running statistics and Clip bounds are not parameters
    count = sum(
        int(np.prod(t.dims)) for t in model.graph.initializer if "running_" not in t.name and len(t.dims) > 0
    )
    assert count == params


@pytest.mark.parametrize(
    "build",
    [lambda: zoo.resnet18(width=8, image=64), lambda: zoo.resnet50(width=8, image=64),
     lambda: zoo.mobilenet_v2(width_mult=0.25, image=64)],
    ids=["resnet18", "resnet50", "mobilenet_v2"],
)
def test_full_size_builders_scale_down_and_run(build) -> None:
    model = build()
    onnx.checker.check_model(model, full_check=True)
    (out,) = _run(model)
    assert out.shape == (2, 1000) and np.isfinite(out).all()


def test_committed_files_exist() -> None:
    names = {p.name for p in COMMITTED}
    expected = {"resnet_tiny_ts.onnx", "mobilenetv2_tiny_ts.onnx", "mobilenetv2_tiny_ts_bn.onnx", "c2f_tiny_ts.onnx"}
    assert expected <= names


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_file_is_valid_and_runs(path: Path) -> None:
    # bigger files: the demo model (make demo prunes and benchmarks it) and the trained digit ResNets
    limit = 3 * MB if path.name == "demo_resnet18.onnx" else 1.5 * MB if path.name.startswith("digits_") else MB
    assert path.stat().st_size < limit
    model = onnx.load(str(path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].name == "input"
    assert not isinstance(_dims(model.graph.input[0])[0], int), "dynamic batch axis"
    outs = _run(path, batch=3)
    batch_axis = 1 if path.name.startswith("crnn_") else 0  # a line recognizer's output is [columns, N, classes]
    assert outs and all(o.shape[batch_axis] == 3 and np.isfinite(o).all() for o in outs)


def test_torchscript_exports_keep_their_habits() -> None:
    ops = {p.name: {n.op_type for n in onnx.load(str(p)).graph.node} for p in COMMITTED}
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape"} <= ops["resnet_tiny_ts.onnx"]
    assert "BatchNormalization" not in ops["mobilenetv2_tiny_ts.onnx"]
    assert "BatchNormalization" in ops["mobilenetv2_tiny_ts_bn.onnx"]
    assert {"Split", "Slice", "Sigmoid", "Mul"} <= ops["c2f_tiny_ts.onnx"]
