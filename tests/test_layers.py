"""Per-layer comparison (onnxprune/layers.py): mapping profiled names back, per-layer MACs, the ideal-speedup
arithmetic on fake profiles, layers found in one model only, and `bench --layers` through the real entry point.

Timings are never asserted: only structure, and arithmetic on hand-made profiles.

    x[N,3,8,8] -> conv1 (3->16) -> bn1 -> relu1 -> conv2 (16->16) -> relu2 -> gap -> flatten -> fc (16->10)

Pruned at ratio 0.5 with round_to 1: conv1 keeps 8 outputs (MACs x0.5), conv2 8 of 16 on both sides (x0.25),
fc 8 inputs (x0.5).
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import onnxprune.api
from onnxprune import layers as layers_mod
from onnxprune.graph import node_names
from onnxprune.layers import (
    INSERTED, KernelTime, compare_layers, format_report, format_report_markdown, layer_report, model_layers,
    named_for_profiling, profile, read_profile,
)
from onnxprune.inputs import make_inputs
from cli_run import assert_error, assert_ok, run

SHAPES = {"x": [1, 3, 8, 8]}
# MACs at SHAPES: N*Cout*H*W * Cin*k*k for the convs, N*Cin*Cout for fc
DENSE_MACS = {"conv1": 16 * 64 * 3 * 9, "conv2": 16 * 64 * 16 * 9, "fc": 16 * 10}
PRUNED_MACS = {"conv1": 8 * 64 * 3 * 9, "conv2": 8 * 64 * 8 * 9, "fc": 8 * 10}


def _w(rng, name, *shape):
    return nh.from_array(rng.standard_normal(shape).astype(np.float32), name)


def small_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["t1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("BatchNormalization", ["t1", "bn.g", "bn.b", "bn.m", "bn.v"], ["t2"], name="bn1"),
        h.make_node("Relu", ["t2"], ["t3"], name="relu1"),
        h.make_node("Conv", ["t3", "conv2.w"], ["t4"], name="conv2", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["t4"], ["t5"], name="relu2"),
        h.make_node("GlobalAveragePool", ["t5"], ["t6"], name="gap"),
        h.make_node("Flatten", ["t6"], ["t7"], name="flatten"),
        h.make_node("Gemm", ["t7", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _w(rng, "conv1.w", 16, 3, 3, 3), _w(rng, "conv1.b", 16), nh.from_array(np.ones(16, np.float32), "bn.g"),
        _w(rng, "bn.b", 16), _w(rng, "bn.m", 16), nh.from_array(np.ones(16, np.float32), "bn.v"),
        _w(rng, "conv2.w", 16, 16, 3, 3), _w(rng, "fc.w", 10, 16), _w(rng, "fc.b", 10),
    ]
    graph = h.make_graph(nodes, "small", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 10])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def dense() -> onnx.ModelProto:
    return small_model()


@pytest.fixture(scope="module")
def pruned(dense) -> onnx.ModelProto:
    return onnxprune.api.prune(dense, ratio=0.5, round_to=1).model


def times(**ms) -> dict[str, KernelTime]:
    """A fake profile: profiled node name -> ms, the kernel guessed from the name."""
    return {name: KernelTime("Gemm" if name == "fc" else "GlobalAveragePool" if name == "gap" else "Conv", value)
            for name, value in ms.items()}


def by_name(report):
    return {(r.name, r.op_type): r for r in report.rows}


# ------------------------------------------------------------------------------------- reading a profile


def _event(name, ts, dur, cat="Node", op="Conv"):
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "ph": "X", "args": {"op_name": op}}


def test_read_profile_skips_warmup_runs_and_takes_medians():
    events = [
        _event("model_run", 0, 100, "Session"), _event("model_run", 200, 100, "Session"),
        _event("model_run", 400, 100, "Session"), _event("model_run", 600, 100, "Session"),
        _event("a_kernel_time", 10, 1000), _event("a_kernel_time", 210, 2000), _event("a_kernel_time", 410, 4000),
        _event("a_kernel_time", 450, 1000),  # the same node twice in one run (a loop body): summed
        _event("a_kernel_time", 610, 3000),
        _event("a_fence_before", 205, 7),  # not a kernel time
        _event("warm_kernel_time", 20, 500, op="Relu"),  # ran in the skipped run only
        _event("late_kernel_time", 620, 800, op="Add"),  # ran in one kept run of three: median of 0, 0, 0.8
        _event("a_kernel_time", 150, 9000),  # between runs: ignored
    ]
    profile_ = read_profile(events, skip=[0])
    assert set(profile_) == {"a", "late"}
    assert profile_["a"].op == "Conv" and profile_["a"].ms == pytest.approx(3.0)  # median of 2, 5, 3 ms
    assert profile_["late"].op == "Add" and profile_["late"].ms == 0.0


def test_read_profile_leaves_out_the_nodes_of_a_loop_body():
    events = [
        _event("model_run", 0, 1000, "Session"),
        _event("loop_kernel_time", 10, 500, op="Loop"),
        _event("body_mm_kernel_time", 10, 50, op="MatMul"),  # begins in the same microsecond as its Loop
        _event("body_add_kernel_time", 100, 100, op="Add"),
        _event("inner_kernel_time", 300, 100, op="Loop"),  # a Loop inside the body
        _event("inner_body_kernel_time", 310, 10, op="Gemm"),
        _event("body_late_kernel_time", 450, 10, op="Add"),  # after the inner Loop, still in the outer one
        _event("after_kernel_time", 600, 20, op="Conv"),
    ]
    assert {name: t.ms for name, t in read_profile(events).items()} == {"loop": 0.5, "after": 0.02}


# ------------------------------------------------------------------------------------- names mapped back


def test_onnxruntime_names_map_to_original_nodes(dense):
    fake = {
        "t3_nchwc": KernelTime("Conv", 1.0),  # NCHWc Conv named after relu1's output: conv1+bn1+relu1
        "t4_nchwc": KernelTime("Conv", 2.0),  # conv2 by its own output: a residual Add + Relu fused later (ResNet)
        "t6_nchwc": KernelTime("GlobalAveragePool", 0.1),  # a pool, named after its own output
        "ReorderInput": KernelTime("ReorderInput", 0.2),
        "ReorderOutput_token_3": KernelTime("ReorderOutput", 0.3),
        "flatten": KernelTime("Flatten", 0.01),
        "fc/MatMulAddFusion": KernelTime("Gemm", 0.4),  # a fusion suffix on the first node's name
        "relu2/SomeScaleFusion/": KernelTime("FusedThing", 0.05),
        "BiasGelu_token_1": KernelTime("BiasGelu", 0.5),  # a made-up name: no original node
        "t1": KernelTime("Conv", 0.7),  # a tensor name without the NCHWc suffix names no node
    }
    layers = model_layers(dense, fake, SHAPES).layers
    assert {key: round(layer.ms, 3) for key, layer in layers.items()} == {
        ("conv1", "Conv"): 1.0, ("conv2", "Conv"): 2.0, ("gap", "GlobalAveragePool"): 0.1, ("flatten", "Flatten"): 0.01,
        ("fc", "Gemm"): 0.4, ("relu2", "Relu"): 0.05, (INSERTED, "ReorderInput"): 0.2,
        (INSERTED, "ReorderOutput"): 0.3, (INSERTED, "BiasGelu"): 0.5, (INSERTED, "Conv"): 0.7,
    }


def test_fused_conv_keeps_its_first_nodes_name(dense):
    layers = model_layers(dense, {"conv1": KernelTime("FusedConv", 1.0), "relu2": KernelTime("Relu", 0.1)},
                          SHAPES).layers
    assert layers[("conv1", "Conv")].kernels == {"FusedConv"}
    assert ("relu2", "Relu") in layers  # a Relu that ran alone stays a Relu


def test_real_profile_maps_every_node(dense):
    feed = make_inputs(dense, SHAPES)[0]
    profiled = profile([dense], feed, warmup=1, runs=2)[0]
    layers = model_layers(dense, profiled, SHAPES).layers
    names = {name for name, _ in layers}
    assert {"conv1", "conv2", "fc"} <= names
    assert "bn1" not in names  # folded into conv1 by onnxruntime, and its time is conv1's
    assert names <= set(node_names(dense.graph.node)) | {INSERTED}
    assert sum(layer.ms for layer in layers.values()) == pytest.approx(sum(t.ms for t in profiled.values()))
    if any(p.endswith("_nchwc") for p in profiled):  # a CPU where onnxruntime uses blocked (NCHWc) convolutions
        assert (INSERTED, "ReorderOutput") in layers


def nhwc_model() -> onnx.ModelProto:
    """An NHWC export: x[N,8,8,3] -> Transpose -> conv (3->8) -> Transpose -> Cast -> bias Add -> Relu -> conv2 ..."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("Transpose", ["x"], ["xc"], name="to_nchw", perm=[0, 3, 1, 2]),
        h.make_node("Conv", ["xc", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Transpose", ["c"], ["ch"], name="to_nhwc", perm=[0, 2, 3, 1]),
        h.make_node("Cast", ["ch"], ["cf"], name="cast", to=T.FLOAT),
        h.make_node("Add", ["cf", "b"], ["a"], name="bias"),
        h.make_node("Relu", ["a"], ["r"], name="relu"),
        h.make_node("Transpose", ["r"], ["rc"], name="to_nchw2", perm=[0, 3, 1, 2]),
        h.make_node("Conv", ["rc", "w2"], ["y"], name="conv2"),
    ]
    graph = h.make_graph(nodes, "nhwc", [h.make_tensor_value_info("x", T.FLOAT, ["N", 8, 8, 3])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)],
                         [_w(rng, "w", 16, 3, 3, 3), _w(rng, "b", 16), _w(rng, "w2", 16, 16, 1, 1)])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_nchwc_conv_named_after_a_fused_node_maps_back_through_transposes():
    fake = {
        "bias_nchwc": KernelTime("Conv", 1.0),  # named after the bias Add fused in, past Transpose and Cast
        "r_nchwc": KernelTime("Conv", 0.5),  # or after the Relu's output tensor
        "y_nchwc": KernelTime("Conv", 0.25),
    }
    layers = model_layers(nhwc_model(), fake, {"x": [1, 8, 8, 3]}).layers
    assert {key: layer.ms for key, layer in layers.items()} == {("conv", "Conv"): 1.5, ("conv2", "Conv"): 0.25}


def test_real_profile_of_an_nhwc_export_puts_conv_time_on_the_convs():
    model = nhwc_model()
    feed = make_inputs(model, {"x": [1, 8, 8, 3]})[0]
    layers = model_layers(model, profile([model], feed, warmup=1, runs=2)[0], {"x": [1, 8, 8, 3]}).layers
    assert (INSERTED, "Conv") not in layers and (INSERTED, "FusedConv") not in layers
    assert {"conv", "conv2"} <= {name for name, _ in layers}


def test_profiles_take_turns_in_blocks(dense, pruned, monkeypatch):
    order = []
    real = layers_mod.run_session

    def recording(session, feed, label):
        order.append(id(session))
        return real(session, feed, label)

    monkeypatch.setattr(layers_mod, "run_session", recording)
    a, b = profile([dense, pruned], make_inputs(dense, SHAPES)[0], warmup=2, runs=5, rounds=2)
    d, p = order[0], order[2]
    assert d != p
    # warm-up per session, then blocks of 1 untimed + ceil(5/2)=3 profiled runs, the last block the 2 left
    assert order == [d] * 2 + [p] * 2 + [d] * 4 + [p] * 4 + [d] * 3 + [p] * 3
    assert a and b and sum(t.ms for t in a.values()) > 0  # both sessions profiled, warm-up and untimed runs left out


def test_unnamed_nodes_are_named_as_reports_name_them(dense):
    bare = onnx.ModelProto()
    bare.CopyFrom(dense)
    for node in bare.graph.node:
        node.name = ""
    runnable = named_for_profiling(bare, bare)
    assert runnable is not bare and [n.name for n in bare.graph.node] == [""] * 8
    assert named_for_profiling(dense, dense) is dense
    profiled = profile([runnable], make_inputs(bare, SHAPES)[0], warmup=0, runs=1)[0]
    names = {name for name, _ in model_layers(bare, profiled, SHAPES).layers}
    assert {"Conv_0", "Conv_3", "Gemm_7"} <= names


# ------------------------------------------------------------------------------------- MACs and arithmetic


def test_mac_ratio_per_layer(dense, pruned):
    report = layer_report(model_layers(dense, times(conv1=1, conv2=1, fc=1, gap=1), SHAPES),
                          model_layers(pruned, times(conv1=1, conv2=1, fc=1, gap=1), SHAPES))
    rows = by_name(report)
    for name in ("conv1", "conv2", "fc"):
        row = rows[name, "Gemm" if name == "fc" else "Conv"]
        assert (row.dense_macs, row.pruned_macs) == (DENSE_MACS[name], PRUNED_MACS[name])
    assert rows["conv1", "Conv"].mac_ratio == 0.5
    assert rows["conv2", "Conv"].mac_ratio == 0.25
    assert rows["fc", "Gemm"].mac_ratio == 0.5
    assert rows["gap", "GlobalAveragePool"].mac_ratio is None
    assert report.mac_ratio == pytest.approx(sum(PRUNED_MACS.values()) / sum(DENSE_MACS.values()))


def test_ideal_speedup_arithmetic(dense, pruned):
    dense_t = {**times(conv1=1.0, conv2=2.0, fc=0.5, gap=0.5), "ReorderOutput": KernelTime("ReorderOutput", 0.1)}
    pruned_t = {**times(conv1=0.6, conv2=0.6, fc=0.3, gap=0.3), "ReorderOutput": KernelTime("ReorderOutput", 0.05)}
    report = layer_report(model_layers(dense, dense_t, SHAPES, "d"), model_layers(pruned, pruned_t, SHAPES, "p"))
    # ideal: MAC layers at their own MAC ratio, the others (gap, ReorderOutput) as measured
    ideal = 1.0 * 0.5 + 2.0 * 0.25 + 0.5 * 0.5 + 0.3 + 0.05
    mac_ratio = sum(PRUNED_MACS.values()) / sum(DENSE_MACS.values())
    assert report.dense_ms == pytest.approx(4.1) and report.pruned_ms == pytest.approx(1.85)
    assert report.ideal_ms == pytest.approx(ideal)
    assert report.speedup == pytest.approx(4.1 / 1.85)
    assert report.ideal_speedup == pytest.approx(4.1 / ideal)
    assert report.mac_efficiency == pytest.approx(4.1 / 1.85 * mac_ratio)
    assert report.ideal_efficiency == pytest.approx(ideal / 1.85)
    assert report.spread_efficiency == pytest.approx(4.1 / ideal * mac_ratio)
    assert report.mac_efficiency == pytest.approx(report.spread_efficiency * report.ideal_efficiency)

    buckets = {b.label: b for b in report.buckets()}
    assert [b.layers for b in buckets.values()] == [1, 2, 2]  # conv2 | conv1, fc | gap, ReorderOutput
    slower = buckets["MACs fell less than the model"]
    assert slower.dense_time_share == pytest.approx(1.5 / 4.1)
    assert slower.dense_mac_share == pytest.approx((DENSE_MACS["conv1"] + DENSE_MACS["fc"]) / sum(DENSE_MACS.values()))
    assert slower.time_ratio == pytest.approx(0.9 / 1.5) and slower.mac_ratio == 0.5
    assert buckets["no MACs"].mac_ratio is None and buckets["no MACs"].time_ratio == pytest.approx(0.35 / 0.6)

    summary = " ".join(report.summary())
    assert f"{4.1 / ideal:.2f}x" in summary and f"{ideal / 1.85:.2f} of that ideal" in summary
    text = format_report(report, top=2)
    assert "(3 more layers)" in text and "conv2" in text and INSERTED not in text.split("(3 more")[0]
    assert "| conv2 | Conv |" in format_report_markdown(report, top=2)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ideal_speedup"] == pytest.approx(4.1 / ideal) and len(data["rows"]) == 5


def test_layers_in_one_model_only(dense, pruned):
    renamed = onnx.ModelProto()
    renamed.CopyFrom(pruned)
    next(n for n in renamed.graph.node if n.name == "conv2").name = "conv2_new"
    report = layer_report(model_layers(dense, times(conv1=1.0, conv2=2.0, fc=0.5), SHAPES),
                          model_layers(renamed, times(conv1=0.5, conv2_new=0.5, fc=0.25), SHAPES))
    rows = by_name(report)
    gone, new = rows["conv2", "Conv"], rows["conv2_new", "Conv"]
    assert gone.pruned_ms is None and gone.time_ratio is None and gone.mac_ratio == 0.0 and gone.ideal_ms == 0.0
    assert new.dense_ms is None and new.mac_ratio is None and new.ideal_ms == 0.5
    assert report.ideal_ms == pytest.approx(0.5 + 0.0 + 0.25 + 0.5)
    assert " - " in format_report(report)
    json.dumps(report.to_dict())


def test_compare_layers_end_to_end(dense, pruned):
    renamed = onnx.ModelProto()
    renamed.CopyFrom(pruned)
    next(n for n in renamed.graph.node if n.name == "conv2").name = "conv2_new"
    report = compare_layers(dense, renamed, batch=2, warmup=0, runs=2)
    names = {r.name for r in report.rows}
    assert {"conv1", "conv2", "conv2_new", "fc"} <= names
    assert report.batch == 2 and report.runs == 2
    assert report.dense_macs == 2 * sum(DENSE_MACS.values())
    assert all(math.isfinite(r.ideal_ms) for r in report.rows)


# ------------------------------------------------------------------------------------- the command line


@pytest.fixture
def files(tmp_path, dense, pruned, monkeypatch):
    monkeypatch.delenv("ONNXPRUNE_DEBUG", raising=False)
    onnx.save(dense, tmp_path / "dense.onnx")
    onnx.save(pruned, tmp_path / "pruned.onnx")
    return tmp_path / "dense.onnx", tmp_path / "pruned.onnx"


FAST = ("--runs", "1", "--rounds", "1", "--warmup", "0")


def test_cli_bench_layers_json(files):
    result = run("bench", *files, "--layers", "2", *FAST, "--json")
    assert_ok(result)
    data = json.loads(result.stdout)
    [group] = data["layers"]
    assert (group["provider"], group["threads"], group["batch"]) == ("cpu", 1, 1)
    [report] = group["reports"]  # the control row is not compared
    assert (report["dense"], report["pruned"]) == ("dense.onnx", "pruned.onnx")
    assert {"conv1", "conv2", "fc"} <= {r["name"] for r in report["rows"]}
    assert {"ideal_speedup", "mac_efficiency", "ideal_efficiency", "buckets", "summary"} <= set(report)
    assert "layers" not in json.loads(run("bench", *files, *FAST, "--json").stdout)


def test_cli_bench_layers_text_markdown_and_other_providers(files):
    result = run("bench", *files, "--layers", "2", *FAST)
    assert_ok(result)
    assert "per-layer time: cpu, 1 thread, batch 1" in result.stdout and "more layers" in result.stdout
    result = run("bench", *files, "--layers", "2", *FAST, "--markdown")
    assert_ok(result)
    assert "### per-layer time" in result.stdout and "| MAC-ratio bucket |" in result.stdout
    result = run("bench", *files, "--layers", "2", *FAST, "--provider", "cuda")
    assert_ok(result)
    assert "CPU profiler only" in result.stdout


def test_cli_bench_layers_errors(files):
    assert_error(run("bench", *files, "--layers", "0", *FAST), 1, "--layers")
    assert_error(run("bench", files[0], "--layers", "3", *FAST), 1, "--layers", "two models")
