"""Depth pruning: which subgraphs are removable blocks, and every removal checked against the oracle (a removed
block equals its branch multiplied by zero), alone and followed by channel pruning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.blocks import find_blocks
from onnxprune.errors import NothingToPruneError, OnnxPruneWarning, OptionError
from onnxprune.fold import fold_constants
from onnxprune.graph import Graph
from onnxprune.inputs import dynamic_dims
from onnxprune.kernels import block_kernels
from graphs import Builder
from oracle_check import assert_matches_oracle
from cli_run import assert_error, run

MODELS = Path(__file__).resolve().parent.parent / "models"
# committed model -> (removable blocks, what they are)
COMMITTED = {
    "demo_resnet18.onnx": 5,  # basic blocks without a downsample: layer1.0, layer1.1, layer2.1, layer3.1, layer4.1
    "resnet_tiny_ts.onnx": 3,
    "resnet_tiny_dynamo.onnx": 3,
    "mobilenetv2_tiny_ts.onnx": 3,  # inverted residuals with an identity skip
    "mobilenetv2_tiny_ts_bn.onnx": 3,
    "tx_bert_ts.onnx": 4,  # post-norm: attention and FFN of 2 layers, the mask shared by both layers
    "tx_bert_dynamo.onnx": 4,
    "tx_vit_ts.onnx": 4,  # pre-norm
    "tx_vit_dynamo.onnx": 4,
    "tx_llama_ts.onnx": 4,  # pre-norm (RMSNorm), rotary tables shared by both layers
    "tx_llama_dynamo.onnx": 4,
    "tx_gpt2_ts.onnx": 4,  # GELU's x + 0.044715 x^3 is no block
}


def load(name: str) -> onnx.ModelProto:
    return onnx.load(str(MODELS / name))


def pinned(model: onnx.ModelProto) -> dict:
    """Batch 2 and 5 for every other dynamic dim (a sequence), so the oracle sees more than one position."""
    shapes = {}
    for vi in model.graph.input:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        axes = dynamic_dims(model).get(vi.name, [])
        if axes:
            shapes[vi.name] = [(2 if axis == 0 else 5) if axis in axes else d for axis, d in enumerate(dims)]
    return shapes


def blocks_of(model: onnx.ModelProto):
    model = onnx.ModelProto.FromString(model.SerializeToString())
    fold_constants(model)
    return find_blocks(Graph(model))


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_blocks_are_found(name):
    assert len(blocks_of(load(name)).blocks) == COMMITTED[name]


@pytest.mark.parametrize("name", sorted(COMMITTED))
@pytest.mark.parametrize("depth_ratio", [0.25, 0.5, 1.0])
def test_committed_depth_pruned_matches_oracle(name, depth_ratio):
    model = load(name)
    result = assert_matches_oracle(model, depth_ratio=depth_ratio, shapes=pinned(model))
    expected = min(COMMITTED[name], int(np.ceil(depth_ratio * COMMITTED[name])))
    assert len(result.removed_blocks) == len(result.report.depth.removed) == expected
    assert result.report.after.macs < result.report.before.macs
    assert len(result.model.graph.node) < len(model.graph.node)
    assert not result.report.groups  # no channel pruning unless --ratio is given


@pytest.mark.parametrize("name", ["resnet_tiny_ts.onnx", "mobilenetv2_tiny_ts_bn.onnx", "tx_bert_ts.onnx",
                                  "tx_llama_dynamo.onnx", "demo_resnet18.onnx"])
def test_depth_then_width_matches_oracle(name):
    model = load(name)
    depth_only = onnxprune.prune(model, depth_ratio=0.5, shapes=pinned(model))
    result = assert_matches_oracle(model, depth_ratio=0.5, ratio=0.5, round_to=1, shapes=pinned(model))
    assert result.report.pruned_groups and result.removed_blocks
    assert result.report.after.macs < depth_only.report.after.macs


def test_resnet_blocks_are_the_basic_blocks_without_downsample():
    search = blocks_of(load("demo_resnet18.onnx"))
    assert [b.label for b in search.blocks] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert search.blocks[0].nodes == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu", "layer1.0.conv2",
                                      "layer1.0.bn2"]
    rejected = dict(search.rejected)
    assert set(rejected) == {"layer2.0.add", "layer3.0.add", "layer4.0.add"}
    assert all("projection shortcut" in reason for reason in rejected.values())


def test_post_norm_blocks_read_the_shared_mask_and_keep_the_norm():
    model = load("tx_bert_ts.onnx")
    search = blocks_of(model)
    attention = [b for b in search.blocks if "attention" in b.label]
    assert len(attention) == 2 and all(b.side_inputs == ["/Mul_output_0"] for b in attention)
    result = onnxprune.prune(model, remove_blocks=4)
    ops = [n.op_type for n in result.model.graph.node]
    # every block gone: the embeddings, then the norms after each Add, which stay; the mask is computed no more
    assert ops.count("LayerNormalization") == 5 and "MatMul" not in ops and "Softmax" not in ops
    assert not any(n.input and n.input[0] == "attention_mask" for n in result.model.graph.node)


def _two_blocks(out_is_add: bool = False, dead_first: bool = False) -> onnx.ModelProto:
    """x -> [conv, relu, conv] + x -> [relu(. - 100), conv] + . : the second branch's input is almost always 0."""
    b = Builder()
    x = b.input("input", ["N", 4, 6, 6])
    y = b.op("Add", [b.conv(b.op("Relu", [b.conv(x, 4, 4, name="a1")]), 4, 4, name="a2"), x], name="add_a")
    shifted = b.op("Relu", [b.op("Sub", [y, b.scalar(100.0)])])
    big = b.conv(shifted, 4, 4, name="b1", bias=False)
    z = b.op("Add", [y, big], name="add_b")
    b.output(z if out_is_add else b.conv(z, 4, 3, name="head"))
    model = b.build()
    for t in model.graph.initializer:  # the second block's weights are large: the weight proxy keeps it
        if t.name == "b1.w":
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * 100, t.name))
    return model


def test_calibration_scores_measure_the_branch_and_weights_do_not():
    model = _two_blocks()
    calib = [{"input": np.random.default_rng(i).standard_normal((8, 4, 6, 6)).astype(np.float32)} for i in range(4)]
    by_data = assert_matches_oracle(model, remove_blocks=1, calib=calib)
    by_weights = assert_matches_oracle(model, remove_blocks=1)
    assert [b.add for b in by_data.removed_blocks] == ["add_b"]  # its branch adds exactly nothing on this data
    assert by_data.report.depth.scored_by == "calibration" and by_data.report.depth.blocks[1].score == 0.0
    assert [b.add for b in by_weights.removed_blocks] == ["add_a"]
    assert any("scored by their last layer's weights" in n for n in by_weights.report.notes)
    assert not any("last layer's weights" in n for n in by_data.report.notes)


def test_an_add_that_is_a_graph_output_keeps_its_name():
    model = _two_blocks(out_is_add=True)
    result = assert_matches_oracle(model, remove_blocks=2)
    nodes = result.model.graph.node
    assert [n.op_type for n in nodes] == ["Identity"] and nodes[0].output[0] == model.graph.output[0].name
    assert not result.model.graph.initializer


def test_branches_that_read_more_than_x_or_feed_more_than_the_add_are_no_blocks():
    b = Builder()
    x = b.input("input", ["N", 4, 6, 6])
    a = b.conv(x, 4, 4, name="main")
    proj = b.conv(x, 4, 4, k=1, name="proj")
    y = b.op("Add", [a, proj], name="projection")  # neither input is computed from the other
    f = b.conv(y, 4, 4, name="f")
    z = b.op("Add", [y, f], name="shared")  # f(y) is also a graph output
    b.output(z, f)
    model = b.build()
    search = blocks_of(model)
    assert not search.blocks
    reasons = dict(search.rejected)
    assert "neither input is computed from the other" in reasons["projection"]
    assert "also read by the graph output" in reasons["shared"]
    with pytest.raises(NothingToPruneError, match="no removable block.*no Add of two computed tensors is a removable"):
        onnxprune.prune(model, depth_ratio=0.5)


def test_a_model_without_residuals_says_so():
    with pytest.raises(NothingToPruneError, match="no residual connection"):
        onnxprune.prune(load("digits_cnn.onnx"), depth_ratio=0.5)


def test_broadcasting_add_is_no_block():
    b = Builder()
    x = b.input("input", ["N", 4, 1, 1])
    f = b.op("Resize", [b.conv(x, 4, 4, k=1, name="f"), "", b.const(np.array([1, 1, 4, 4], np.float32))])
    b.output(b.op("Add", [x, f], name="bcast"))
    search = blocks_of(b.build())
    assert not search.blocks and "may broadcast" in dict(search.rejected)["bcast"]


def test_option_checks():
    model = load("resnet_tiny_ts.onnx")
    for kwargs in ({"depth_ratio": 0.0}, {"depth_ratio": 1.5}, {"remove_blocks": 0},
                   {"depth_ratio": 0.5, "remove_blocks": 1}, {"depth_ratio": 0.5, "recover": "lsq"}):
        with pytest.raises(OptionError):
            onnxprune.prune(model, **kwargs)
    assert len(onnxprune.prune(model, remove_blocks=99).removed_blocks) == 3


def test_kernels_per_block_after_onnxruntime_fusions():
    model = load("demo_resnet18.onnx")
    graph = Graph(model)
    search = find_blocks(graph)
    counts, total, why = block_kernels(model, search.blocks)
    # each basic block runs as two fused convolutions (conv+bn+relu, conv+bn+add+relu)
    assert counts == [2] * 5 and total > 10 and not why
    # the NCHWc pass names fused convolutions after their output tensors (dynamo: 'relu_1_nchwc', 'relu_10_nchwc'):
    # both exports of one network count the same kernels per block
    per_export = []
    for name in ("resnet_tiny_ts.onnx", "resnet_tiny_dynamo.onnx"):
        model = load(name)
        per_export.append(block_kernels(model, find_blocks(Graph(model)).blocks)[:2])
    assert per_export[0] == per_export[1] and all(per_export[0][0])


def test_inspect_lists_blocks_and_prune_cli(tmp_path):
    result = run("inspect", MODELS / "demo_resnet18.onnx")
    assert result.exit_code == 0, result.output
    assert "layer4.1.add" in result.stdout and "removable blocks: 5" in result.stdout
    report = json.loads(run("inspect", MODELS / "demo_resnet18.onnx", "--json").stdout)
    assert [b["kernels"] for b in report["blocks"]] == [2] * 5 and report["kernels_total"]
    out = tmp_path / "d.onnx"
    result = run("prune", MODELS / "demo_resnet18.onnx", "-o", out, "--depth-ratio", "0.25", "--json")
    assert result.exit_code == 0, result.output
    depth = json.loads(result.stdout)["depth"]
    assert json.loads(result.stdout)["groups"] == []  # --ratio defaults to 0 with a depth option
    assert depth["found"] == 5 and depth["removed"] == 2 and out.exists()
    removed = [b["name"] for b in depth["blocks"] if b["removed"]]
    # each block other than layer1.0 goes with its 2 fused kernels; the Relu after its Add, left reading the
    # previous block's Relu, goes too rather than becoming a kernel of its own
    assert "layer1.0" not in removed and depth["kernels_before"] - depth["kernels_after"] == 4
    assert_error(run("prune", MODELS / "digits_cnn.onnx", "-o", tmp_path / "x.onnx", "--remove-blocks", "1"), 3,
                 "no residual connection")
    assert_error(run("prune", MODELS / "demo_resnet18.onnx", "-o", tmp_path / "x.onnx", "--unstructured",
                     "--sparsity", "0.5", "--depth-ratio", "0.5"), 1, "--depth-ratio")
    # plans of depth-pruned models: tests/test_plan_depth.py


def test_nested_blocks_are_never_both_removed():
    """out = x + conv_b(t + conv_a(t)), t = relu(x): the inner block lies inside the outer block's branch."""
    b = Builder()
    x = b.input("input", ["N", 4, 6, 6])
    t = b.op("Relu", [x])
    inner = b.op("Add", [t, b.conv(t, 4, 4, name="conv_a")], name="inner")
    b.output(b.conv(b.op("Add", [x, b.conv(inner, 4, 4, name="conv_b")], name="outer"), 4, 2, name="head"))
    model = b.build()
    search = blocks_of(model)
    outer, inner_block = sorted(search.blocks, key=lambda blk: blk.add, reverse=True)
    assert outer.add == "outer" and outer.contains(inner_block) and not inner_block.contains(outer)
    result = assert_matches_oracle(model, remove_blocks=2)
    assert len(result.removed_blocks) == 1


def test_prune_cli_scores_blocks_on_calibration_data_then_recovers_the_width_stage(tmp_path):
    out = tmp_path / "d.onnx"
    result = run("prune", MODELS / "digits_resnet.onnx", "-o", out, "--remove-blocks", "1", "--ratio", "0.3",
                 "--round-to", "1", "--calib", MODELS / "digits_calib.npz", "--calib-samples", "64", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["depth"]["scored_by"] == "calibration" and report["depth"]["removed"] == 1
    assert report["depth"]["blocks"][0]["score"] > 0 and report["recovery"] is not None
    assert report["pruned_groups"] and out.exists()


def test_residuals_fused_into_custom_ops_are_named_as_the_reason():
    with pytest.raises(NothingToPruneError, match="com.microsoft.SkipLayerNormalization.*fused residual Adds"):
        onnxprune.prune(load("tx_bert_ts_ortopt.onnx"), remove_blocks=1)


def test_exclude_keeps_matching_blocks():
    model = load("tx_bert_ts.onnx")
    result = assert_matches_oracle(model, remove_blocks=2, exclude=["/layers.1/*"], shapes=pinned(model))
    assert sorted(b.add for b in result.removed_blocks) == ["/layers.0/Add", "/layers.0/Add_2"]
    notes = {b.add: b.note for b in result.report.depth.blocks}
    assert notes["/layers.1/Add"] == "excluded by /layers.1/*" and notes["/layers.0/Add"] == ""
    with pytest.raises(NothingToPruneError, match="every removable block"):
        onnxprune.prune(model, remove_blocks=1, exclude=["/layers.*"])
    with pytest.warns(OnnxPruneWarning, match="matches no node of a residual block"):
        result = onnxprune.prune(model, remove_blocks=1, exclude=["layers.1"])
    assert result.report.warnings and len(result.removed_blocks) == 1


def test_depth_options_refuse_a_latency_target(tmp_path):
    out = tmp_path / "x.onnx"
    assert_error(run("prune", "models/demo_resnet18.onnx", "-o", str(out), "--depth-ratio", "0.25",
                     "--latency-target", "0.5"),
                 1, "--latency-target and --speedup choose widths only: not with --depth-ratio")
    assert not out.exists()


def test_blocks_whose_names_share_one_prefix_are_labelled_by_their_add():
    """Paddle exports name every node p2o.<Op>.<n>: the common prefix 'p2o' would label every block alike."""
    model = _two_blocks()
    for node in model.graph.node:
        if node.op_type != "Add":
            node.name = f"p2o.{node.op_type}.{node.name}"
    labels = [b.label for b in blocks_of(model).blocks]
    assert labels == ["add_a", "add_b"]


def test_a_quantized_model_is_named_as_the_reason_for_no_block():
    model = _two_blocks()
    for node in model.graph.node:
        if node.op_type == "Conv":
            node.op_type = "ConvInteger"
    search = blocks_of(model)
    assert not search.blocks and search.why_none().startswith("the model is quantized (ConvInteger)")
