"""The `onnxprune` command line as a user runs it: exit codes, one-line errors, and files left untouched.

A few cases run the real command in a subprocess (`python -m onnxprune.cli`), so that "no traceback" is
tested end to end; the rest call `onnxprune.cli.main` through click's CliRunner, which is much faster.
Every failing command must exit with its documented code (cli.py), print exactly one stderr line starting
with "error:", print no traceback, and leave the working folder byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from onnx.external_data_helper import set_external_data, uses_external_data

import onnxprune.api
import onnxprune.cli
from cli_run import assert_error, assert_ok, exit_code, run, run_process, snapshot
from models import zoo

from graphs import Builder



# ----------------------------------------------------------------------------------------------- running


# ------------------------------------------------------------------------------------------------ models

C = 16  # channels of the chain models: with --round-to 1 every prunable group loses half
_rng = np.random.default_rng(0)


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return nh.from_array((_rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def _scalar(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return nh.from_array(np.array(value, dtype), name)


def chain(middle=(), middle_inits=(), mid_out="b", opsets=(("", 17),), drop=()) -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv a -> Relu -> Conv b -> [middle: b -> mid_out] -> Conv c -> Relu -> GAP -> Flatten
    -> Gemm fc -> logits[1,10]. Without a middle: groups (a,b), (b,c), (c,fc) prunable, fc's outputs blocked."""
    nodes = [
        h.make_node("Conv", ["x", "a.w", "a.b"], ["a"], name="a", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["a"], ["ar"], name="a_relu"),
        h.make_node("Conv", ["ar", "b.w", "b.b"], ["b"], name="b", pads=[1, 1, 1, 1]),
        *middle,
        h.make_node("Conv", [mid_out, "c.w", "c.b"], ["c"], name="c", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["cr"], name="c_relu"),
        h.make_node("GlobalAveragePool", ["cr"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    inits = [_w("a.w", C, 3, 3, 3), _w("a.b", C), _w("b.w", C, C, 3, 3), _w("b.b", C), _w("c.w", C, C, 3, 3),
             _w("c.b", C), _w("fc.w", 10, C), _w("fc.b", 10), *middle_inits]
    inits = [t for t in inits if t.name not in drop]
    graph = h.make_graph(nodes, "chain", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                         [h.make_tensor_value_info("logits", T.FLOAT, [1, 10])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid(d, v) for d, v in opsets], ir_version=8)


def custom_model() -> onnx.ModelProto:
    """b is read by an op of a custom domain that onnxruntime does not know."""
    return chain([h.make_node("MyRelu", ["b"], ["m"], name="custom", domain="my.ops")], mid_out="m",
                 opsets=(("", 17), ("my.ops", 1)))


def if_model() -> onnx.ModelProto:
    """Both branches of an If read the outer activation b."""
    out = lambda n: [h.make_tensor_value_info(n, T.FLOAT, None)]  # noqa: E731
    then = h.make_graph([h.make_node("Relu", ["b"], ["t"], name="then_relu")], "then", [], out("t"))
    other = h.make_graph([h.make_node("Sigmoid", ["b"], ["e"], name="else_sigmoid")], "else", [], out("e"))
    node = h.make_node("If", ["cond"], ["m"], name="if", then_branch=then, else_branch=other)
    return chain([node], [_scalar("cond", True, np.bool_)], mid_out="m")


def loop_model() -> onnx.ModelProto:
    """b is a loop-carried value of a two-iteration Loop."""
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         h.make_node("Relu", ["v"], ["v_out"], name="body_relu")],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("v", T.FLOAT, None)],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.FLOAT, None)],
    )
    node = h.make_node("Loop", ["trip", "cond", "b"], ["m"], name="loop", body=body)
    return chain([node], [_scalar("trip", 2, np.int64), _scalar("cond", True, np.bool_)], mid_out="m")


def _int8(name, shape) -> onnx.TensorProto:
    return nh.from_array(_rng.integers(-100, 100, shape).astype(np.int8), name)


def dq_weight_model() -> onnx.ModelProto:
    """Conv c reads its weight through DequantizeLinear of an int8 initializer."""
    node = h.make_node("DequantizeLinear", ["c.wq", "c.s", "c.z"], ["c.w"], name="dq_c")
    inits = [_int8("c.wq", (C, C, 3, 3)), _scalar("c.s", 0.01), _scalar("c.z", 0, np.int8)]
    return chain([node], inits, drop=("c.w",))


def mixed_quant_model() -> onnx.ModelProto:
    """Float convs around QuantizeLinear -> QLinearConv -> DequantizeLinear."""
    nodes = [
        h.make_node("QuantizeLinear", ["b", "xs", "xz"], ["bq"], name="quant"),
        h.make_node("QLinearConv", ["bq", "xs", "xz", "qw", "qws", "qwz", "ys", "yz"], ["yq"], name="qconv",
                    pads=[1, 1, 1, 1]),
        h.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["m"], name="dequant"),
    ]
    inits = [_scalar("xs", 0.05), _scalar("xz", 0, np.int8), _int8("qw", (C, C, 3, 3)), _scalar("qws", 0.01),
             _scalar("qwz", 0, np.int8), _scalar("ys", 0.05), _scalar("yz", 0, np.int8)]
    return chain(nodes, inits, mid_out="m")


def qlinear_model() -> onnx.ModelProto:
    """Fully quantized: QuantizeLinear -> QLinearConv -> QLinearConv -> DequantizeLinear."""
    nodes = [
        h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant"),
        h.make_node("QLinearConv", ["xq", "xs", "xz", "w1", "w1s", "w1z", "y1s", "y1z", "b1"], ["y1"], name="qconv1",
                    pads=[1, 1, 1, 1]),
        h.make_node("QLinearConv", ["y1", "y1s", "y1z", "w2", "w2s", "w2z", "y2s", "y2z"], ["y2"], name="qconv2",
                    pads=[1, 1, 1, 1]),
        h.make_node("DequantizeLinear", ["y2", "y2s", "y2z"], ["y"], name="dequant"),
    ]
    inits = [_scalar("xs", 0.05), _scalar("xz", 0, np.int8), _int8("w1", (C, 3, 3, 3)), _scalar("w1s", 0.01),
             _scalar("w1z", 0, np.int8), _scalar("y1s", 0.05), _scalar("y1z", 0, np.int8),
             nh.from_array(_rng.integers(-50, 50, C).astype(np.int32), "b1"), _int8("w2", (8, C, 3, 3)),
             _scalar("w2s", 0.01), _scalar("w2z", 0, np.int8), _scalar("y2s", 0.05), _scalar("y2z", 0, np.int8)]
    graph = h.make_graph(nodes, "q", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 8, 8])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def lonely_conv_model() -> onnx.ModelProto:
    """One Conv whose output is the graph output: its only group is blocked."""
    graph = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"], name="conv")], "lonely",
                         [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 6, 6])], [_w("w", 8, 3, 3, 3)])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def relu_model() -> onnx.ModelProto:
    """No weights at all."""
    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"], name="relu")], "relu",
                         [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def with_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.opset_import[0].version = version
    return copy


BUILDERS = {
    "cfg": zoo.conv_flatten_gemm,  # dynamic batch N; prunes with the default options
    "plain": chain,
    "custom": custom_model,
    "if": if_model,
    "loop": loop_model,
    "dq": dq_weight_model,
    "mixed": mixed_quant_model,
    "qlinear": qlinear_model,
    "lonely": lonely_conv_model,
    "relu": relu_model,
}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for name, build in BUILDERS.items():
        onnx.save(build(), folder / f"{name}.onnx")
    cfg = onnx.load(folder / "cfg.onnx")
    onnx.save(with_opset(cfg, 3), folder / "opset3.onnx")
    onnx.save(with_opset(cfg, onnx.defs.onnx_opset_version() + 1), folder / "opset_new.onnx")
    return folder


class Work(type(Path())):
    """The test's folder; `put(name)` copies a library model into it and returns its path."""

    library: Path

    def put(self, name: str, as_name: str | None = None) -> Path:
        dst = Path(self) / (as_name or f"{name}.onnx")
        shutil.copyfile(self.library / f"{name}.onnx", dst)
        return dst


@pytest.fixture
def work(tmp_path, library) -> Work:
    folder = Work(tmp_path)
    folder.library = library
    return folder


def runs(path: Path, model_for_inputs: Path | None = None) -> list[np.ndarray]:
    """Checker (full) passes and onnxruntime runs it on random inputs (batch 1 for symbolic dims)."""
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return session.run(None, feeds)


def groups_by_member(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for g in report["groups"]:
        for m in g["members"]:
            out.setdefault(m, []).append(g)
    return out


# ----------------------------------------------------------------------------- end to end, in a subprocess


def test_process_missing_file_one_line(tmp_path):
    result = run_process("inspect", "missing.onnx", cwd=tmp_path)
    assert_error(result, 1, "missing.onnx", "no such file")
    assert result.stdout == ""


def test_process_not_onnx_one_line(tmp_path):
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(7).bytes(4096))
    before = snapshot(tmp_path)
    result = run_process("prune", "random.onnx", "-o", "out.onnx", cwd=tmp_path)
    assert_error(result, 1, "random.onnx", "not a readable ONNX model")
    assert snapshot(tmp_path) == before


def test_process_debug_shows_traceback(tmp_path):
    result = run_process("--debug", "inspect", "missing.onnx", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ModelLoadError" in result.stderr and "no such file" in result.stderr
    env_result = run_process("inspect", "missing.onnx", cwd=tmp_path, env_extra={"ONNXPRUNE_DEBUG": "1"})
    assert "Traceback" in env_result.stderr


def test_process_prune_json_happy_path(work):
    src = work.put("cfg")
    result = run_process("prune", src.name, "-o", "small.onnx", "--json", cwd=work)
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["after"]["params"] < report["before"]["params"]
    assert report["after"]["macs"] < report["before"]["macs"]
    assert report["pruned_groups"] >= 1
    assert runs(work / "small.onnx")[0].shape == (1, 10)
    assert sorted(p.name for p in work.iterdir()) == ["cfg.onnx", "small.onnx"]  # no temp folder left


def test_process_nothing_to_prune_exit_3(work):
    work.put("lonely")
    result = run_process("prune", "lonely.onnx", "-o", "out.onnx", cwd=work)
    assert_error(result, 3, "nothing to prune", "graph output")
    assert not (work / "out.onnx").exists()


# ------------------------------------------------------------------------------ unreadable model files

COMMANDS = {  # a command line for each command, MODEL standing for the bad file
    "inspect": ["inspect", "MODEL"],
    "prune": ["prune", "MODEL", "-o", "out.onnx"],
    "prune-unstructured": ["prune", "MODEL", "-o", "out.onnx", "--unstructured", "--sparsity", "0.5"],
    "verify": ["verify", "MODEL", "MODEL"],
    "bench": ["bench", "MODEL", "--runs", "1", "--warmup", "0", "--rounds", "1"],
}


def _bad_files(folder: Path) -> dict[str, Path]:
    good = zoo.conv_flatten_gemm().SerializeToString()
    files = {
        "random": np.random.default_rng(1).bytes(2000),
        "text": b"this is a text file, not an ONNX model\n" * 20,
        "truncated": good[: len(good) // 2],
        "truncated_head": good[:40],
        "empty": b"",
    }
    out = {}
    for name, data in files.items():
        (folder / f"{name}.onnx").write_bytes(data)
        out[name] = folder / f"{name}.onnx"
    return out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_missing_file(tmp_path, command):
    args = [str(tmp_path / "missing.onnx") if a == "MODEL" else a for a in COMMANDS[command]]
    before = snapshot(tmp_path)
    assert_error(run(*args), 1, "missing.onnx", "no such file")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", ["random", "text", "truncated", "truncated_head", "empty"])
def test_unreadable_file(tmp_path, monkeypatch, command, kind):
    monkeypatch.chdir(tmp_path)
    path = _bad_files(tmp_path)[kind]
    before = snapshot(tmp_path)
    args = [str(path) if a == "MODEL" else a for a in COMMANDS[command]]
    line = assert_error(run(*args), 1, path.name)
    assert "not a readable ONNX model" in line or "not an ONNX model" in line
    assert snapshot(tmp_path) == before


def test_many_truncations_and_random_files_are_user_errors(tmp_path):
    """Wherever a file is cut, and whatever bytes it holds, the answer is exit 1 and one line."""
    good = zoo.conv_flatten_gemm().SerializeToString()
    rng = np.random.default_rng(3)
    path = tmp_path / "bad.onnx"
    contents = [good[:cut] for cut in sorted({1, 2, 3, 10, 64, *rng.integers(4, len(good) - 1, 12).tolist()})]
    contents += [rng.bytes(int(rng.integers(1, 300))) for _ in range(15)]
    for data in contents:
        path.write_bytes(data)
        assert_error(run("inspect", path), 1, "bad.onnx")


def test_folder_as_model_is_a_usage_error(tmp_path):
    result = run("inspect", tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------------- opsets


@pytest.mark.parametrize("name", ["opset3", "opset_new"])
@pytest.mark.parametrize("command", ["inspect", "prune"])
def test_unsupported_opset(work, name, command):
    src = work.put(name)
    before = snapshot(work)
    args = ["inspect", src] if command == "inspect" else ["prune", src, "-o", work / "out.onnx"]
    assert_error(run(*args), 1, "unsupported opset", "default-domain opsets")
    assert snapshot(work) == before


def test_no_default_domain_opset(work):
    model = onnx.load(work.put("cfg"))
    del model.opset_import[:]
    model.opset_import.append(h.make_opsetid("my.ops", 1))
    onnx.save(model, work / "nodefault.onnx")
    assert_error(run("inspect", work / "nodefault.onnx"), 1, "no default-domain opset")


# ------------------------------------------------------------------------- custom domains and subgraphs


def test_custom_domain_op_blocks_its_group_with_reason(work):
    result = run("inspect", work.put("custom"), "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    blocked = [g for g in report["groups"] if not g["prunable"]]
    reasons = [r for g in blocked for r in g["reasons"]]
    assert any("custom-domain op my.ops::MyRelu" in r for r in reasons), reasons
    assert any(g["prunable"] and {"a", "b"} <= set(g["members"]) for g in report["groups"])


def test_custom_domain_model_still_prunes_the_rest(work):
    src = work.put("custom")
    result = run("prune", src, "-o", work / "out.onnx", "--round-to", "1", "--no-check", "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["pruned_groups"] >= 1 and report["after"]["params"] < report["before"]["params"]
    out = onnx.load(work / "out.onnx")
    weights = {t.name: t for t in out.graph.initializer}
    assert weights["a.w"].dims[0] == C // 2  # (a, b) pruned
    assert weights["b.w"].dims[0] == C  # read by the custom op: kept
    assert [n.op_type for n in out.graph.node if n.domain == "my.ops"] == ["MyRelu"]


def test_custom_domain_model_that_onnxruntime_cannot_run(work):
    """The written-model check cannot run the input either: a user-level error naming --no-check, no file."""
    src = work.put("custom")
    before = snapshot(work)
    assert_error(run("prune", src, "-o", work / "out.onnx", "--round-to", "1"), 1, "--no-check", "MyRelu")
    assert snapshot(work) == before


@pytest.mark.parametrize("name, reason", [
    ("if", "read inside a subgraph, which onnxprune does not enter"),
    ("loop", "Loop holds subgraphs, which onnxprune does not enter"),
])
def test_subgraph_blocks_its_group_and_the_rest_prunes(work, name, reason):
    src = work.put(name)
    result = run("inspect", src, "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    b_out = [g for g in report["groups"] if "b" in g["members"] and not g["prunable"]]
    assert b_out and any(reason in r for g in b_out for r in g["reasons"]), report["groups"]
    assert report["prunable_groups"] >= 1

    dense = onnx.load(src)
    assert_ok(run("prune", src, "-o", work / "out.onnx", "--round-to", "1"))
    out = onnx.load(work / "out.onnx")
    weights = {t.name: t for t in out.graph.initializer}
    assert weights["a.w"].dims[0] == C // 2 and weights["b.w"].dims[0] == C
    holder = [n for n in out.graph.node if n.op_type in ("If", "Loop")]
    assert [a.SerializeToString() for a in holder[0].attribute] == [
        a.SerializeToString() for n in dense.graph.node if n.op_type in ("If", "Loop") for a in n.attribute
    ], "the subgraph must be left as it was"
    assert runs(work / "out.onnx")[0].shape == (1, 10)


# ---------------------------------------------------------------------------------------------- quantized


def test_quantized_ops_block_with_reason(work):
    result = run("inspect", work.put("mixed"), "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    reasons = [r for g in report["groups"] for r in g["reasons"]]
    assert any("quantized ops are not pruned" in r for r in reasons), reasons
    assert report["prunable_groups"] >= 1
    assert_ok(run("prune", work / "mixed.onnx", "-o", work / "out.onnx", "--round-to", "1"))
    assert runs(work / "out.onnx")[0].shape == (1, 10)


def test_dequantized_conv_weight_blocks_with_reason(work):
    result = run("inspect", work.put("dq"), "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    b_out = [g for g in report["groups"] if any("Conv 'c'" in r for r in g["reasons"])]
    assert len(b_out) == 1 and not b_out[0]["prunable"] and "b" in b_out[0]["members"], report["groups"]
    assert "c" not in {m for g in report["groups"] for m in g["members"]}  # c's weight is not sliced anywhere
    assert_ok(run("prune", work / "dq.onnx", "-o", work / "out.onnx", "--round-to", "1"))
    out = {t.name: t for t in onnx.load(work / "out.onnx").graph.initializer}
    assert out["c.wq"].dims == [C, C, 3, 3]  # the quantized weight is not touched


def test_dequantized_conv_weight_reason_says_quantized(work):
    report = json.loads(run("inspect", work.put("dq"), "--json").stdout)
    reasons = [r for g in report["groups"] for r in g["reasons"] if "Conv 'c'" in r]
    assert reasons and any("quantiz" in r.lower() for r in reasons), reasons


def test_fully_quantized_model_nothing_to_prune(work):
    src = work.put("qlinear")
    before = snapshot(work)
    assert_error(run("prune", src, "-o", work / "out.onnx"), 3, "nothing to prune")
    assert_error(run("prune", src, "-o", work / "out.onnx", "--unstructured", "--sparsity", "0.5"), 3,
                 "nothing to prune")
    assert snapshot(work) == before


def test_fully_quantized_model_says_why(work):
    line = assert_error(run("prune", work.put("qlinear"), "-o", work / "out.onnx"), 3, "nothing to prune")
    assert "quantiz" in line.lower()


# ------------------------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("args, needle", [
    (["--ratio", "-0.1"], "error: --ratio must be in [0, 1), got -0.1"),
    (["--ratio", "1.0"], "error: --ratio must be in [0, 1), got 1.0"),
    (["--ratio", "1.5"], "error: --ratio must be in [0, 1), got 1.5"),
    (["--ratio", "nan"], "error: --ratio must be in [0, 1), got nan"),
    (["--round-to", "0"], "error: --round-to must be at least 1, got 0"),
    (["--min-channels", "0"], "error: --min-channels must be at least 1, got 0"),
    (["--scope", "global", "--max-ratio", "1.0"], "error: --max-ratio must be in (0, 1), got 1.0"),
    (["--shape", "input"], "bad shape 'input'"),
    (["--shape", "input=1xax32x32"], "bad shape"),
    (["--shape", "=1x3x32x32"], "bad shape"),
    (["--shape", "input="], "bad shape"),
    (["--shape", "input=1x3x0x32"], "bad shape"),
    (["--shape", "nosuch=1x3x32x32"], "nosuch"),
    (["--shape", "input=1x3x32x32", "--shape", "input=2x3x32x32"], "twice"),
    (["--shape", "input=1x3x32"], "rank"),
    (["--shape", "input=1x4x32x32"], "fixed to 3"),
    (["--sparsity", "0.5"], "--unstructured"),
    (["--pattern", "2:4"], "--unstructured"),
    (["--unstructured"], "--sparsity"),
    (["--unstructured", "--sparsity", "1.0"], "sparsity"),
    (["--unstructured", "--sparsity", "-0.1"], "sparsity"),
    (["--unstructured", "--pattern", "4:2"], "pattern"),
    (["--unstructured", "--pattern", "2-4"], "pattern"),
])
def test_bad_prune_options(work, args, needle):
    src = work.put("cfg")
    before = snapshot(work)
    assert_error(run("prune", src, "-o", work / "out.onnx", *args), 1, needle)
    assert snapshot(work) == before


@pytest.mark.parametrize("args", [["--shape", "nosuch=1x3x32x32"], ["--shape", "input:1x3"]])
def test_bad_inspect_options(work, args):
    assert_error(run("inspect", work.put("cfg"), *args), 1)


@pytest.mark.parametrize("args", [["--ratio", "abc"], ["--round-to", "x"], ["--scope", "sideways"], ["--nope"]])
def test_click_usage_errors_exit_2_without_traceback(work, args):
    src = work.put("cfg")
    before = snapshot(work)
    result = run("prune", src, "-o", work / "out.onnx", *args)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and "Error:" in result.stderr
    assert snapshot(work) == before


def test_bad_verify_and_bench_options(work):
    src = work.put("cfg")
    assert_error(run("verify", src, src, "--min-cosine", "2"), 1, "--min-cosine")
    assert_error(run("bench", src, "--runs", "0"), 1, "--runs")
    assert_error(run("bench", src, "--json", "--markdown", "--runs", "1"), 1, "--json")


def test_a_file_in_the_output_path_fails_before_any_work(work, monkeypatch):
    src = work.put("cfg")

    def no_pruning(*a, **k):
        raise AssertionError("pruned although the output cannot be written")

    monkeypatch.setattr(onnxprune.api, "prune", no_pruning)
    (work / "plain").write_text("a file")
    before = snapshot(work)
    assert_error(run("prune", src, "-o", work / "plain" / "out.onnx"), 1, "plain is a file, not a folder")
    assert snapshot(work) == before


def test_a_missing_output_folder_is_created_when_the_output_is_written(work):
    src = work.put("cfg")
    assert_ok(run("prune", src, "-o", work / "new" / "sub" / "out.onnx"))
    assert (work / "new" / "sub" / "out.onnx").is_file()
    lonely = work.put("lonely")
    before = snapshot(work)
    assert_error(run("prune", lonely, "-o", work / "other" / "out.onnx"), 3, "nothing to prune")
    assert snapshot(work) == before  # nothing written: no folder either


# ------------------------------------------------------------------------------------------ nothing to do


def test_nothing_prunable(work):
    src = work.put("lonely")
    before = snapshot(work)
    assert_error(run("prune", src, "-o", work / "out.onnx"), 3, "nothing to prune", "graph output 'y'")
    assert snapshot(work) == before
    result = run("inspect", src)  # inspecting is fine: it shows why
    assert_ok(result)
    assert "blocked" in result.stdout and "graph output 'y' keeps its shape" in result.stdout


def test_nothing_for_unstructured(work):
    src = work.put("relu")
    assert_error(run("prune", src, "-o", work / "out.onnx", "--unstructured", "--sparsity", "0.5"), 3,
                 "nothing to prune")
    assert not (work / "out.onnx").exists()


# ------------------------------------------------------------------------------------- output == input


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
@pytest.mark.parametrize("mode", ["structured", "unstructured"])
def test_output_equal_to_input_refused(work, monkeypatch, spelling, mode):
    src = work.put("cfg")
    monkeypatch.chdir(work)
    if spelling == "symlink":
        (work / "link.onnx").symlink_to(src)
    if spelling == "hardlink":
        os.link(src, work / "link.onnx")
    output = {"same": src, "dotted": "./cfg.onnx", "symlink": "link.onnx", "hardlink": "link.onnx"}[spelling]
    extra = ["--unstructured", "--sparsity", "0.5"] if mode == "unstructured" else []
    before = snapshot(work)
    assert_error(run("prune", "cfg.onnx", "-o", output, *extra), 1, "output is the input model", "--force")
    assert snapshot(work) == before


def test_force_overwrites_input(work):
    src = work.put("cfg")
    size = src.stat().st_size
    result = run("prune", src, "-o", src, "--force", "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["before"]["size_bytes"] == size  # measured before the input was written over
    assert report["after"]["size_bytes"] == src.stat().st_size < size
    runs(src)
    assert sorted(p.name for p in work.iterdir()) == ["cfg.onnx"]


def test_force_keeps_input_when_the_check_fails(work):
    src = work.put("custom")  # onnxruntime cannot run it: the check fails after the write
    before = snapshot(work)
    assert_error(run("prune", src, "-o", src, "--force", "--round-to", "1"), 1, "--no-check")
    assert snapshot(work) == before


# ------------------------------------------------------------------------------------------ external data


def _save_external(model: onnx.ModelProto, path: Path, location: str) -> None:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)


def _relocate(path: Path, location: str) -> None:
    """Point every external tensor of the model file at `location` (the data is not moved)."""
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        if uses_external_data(t):
            next(e for e in t.external_data if e.key == "location").value = location
    onnx.save(model, str(path))


def test_external_data_in_folder_loads_and_prunes(work):
    folder = work / "in"
    folder.mkdir()
    _save_external(zoo.conv_flatten_gemm(), folder / "m.onnx", "m.weights")
    assert (folder / "m.weights").stat().st_size > (folder / "m.onnx").stat().st_size
    assert_ok(run("inspect", folder / "m.onnx"))
    result = run("prune", folder / "m.onnx", "-o", work / "out.onnx", "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["before"]["size_bytes"] == (folder / "m.onnx").stat().st_size + (folder / "m.weights").stat().st_size
    assert runs(work / "out.onnx")[0].shape == (1, 10)
    assert_ok(run("verify", folder / "m.onnx", folder / "m.onnx", "--min-cosine", "0.9999"))


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
@pytest.mark.parametrize("command", ["inspect", "prune", "verify"])
def test_external_data_outside_the_folder_refused(work, where, command):
    folder = work / "in"
    folder.mkdir()
    _save_external(zoo.conv_flatten_gemm(), folder / "m.onnx", "m.bin")
    shutil.copyfile(folder / "m.bin", work / "outside.bin")
    location = {"parent": "../outside.bin", "absolute": str(work / "outside.bin"), "symlink": "link.bin"}[where]
    if where == "symlink":
        (folder / "link.bin").symlink_to(work / "outside.bin")
    _relocate(folder / "m.onnx", location)
    before = snapshot(work)
    args = {"inspect": ["inspect", folder / "m.onnx"], "prune": ["prune", folder / "m.onnx", "-o", work / "o.onnx"],
            "verify": ["verify", folder / "m.onnx", folder / "m.onnx"]}[command]
    line = assert_error(run(*args), 1, "external data location", location)
    assert ("absolute path" if where == "absolute" else "leaves the model's folder") in line
    assert snapshot(work) == before


def test_external_data_of_a_subgraph_outside_the_folder_refused(work):
    """Tensors inside If branches are checked too (onnx's own check used to surface as an internal error)."""
    folder = work / "in"
    folder.mkdir()
    (work / "outside.bin").write_bytes(np.full(4, 7, np.float32).tobytes())
    w = nh.from_array(np.ones(4, np.float32), "w")
    out = lambda n: [h.make_tensor_value_info(n, T.FLOAT, [4])]  # noqa: E731
    then = h.make_graph([h.make_node("Add", ["x", "w"], ["t"])], "then", [], out("t"), [w])
    other = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], out("e"))
    graph = h.make_graph([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
                         [h.make_tensor_value_info("c", T.BOOL, []), *[h.make_tensor_value_info("x", T.FLOAT, [4])]],
                         out("y"))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    tensor = next(a for a in model.graph.node[0].attribute if a.name == "then_branch").g.initializer[0]
    set_external_data(tensor, "../outside.bin", 0, 16)
    tensor.ClearField("raw_data")
    tensor.data_location = T.EXTERNAL
    onnx.save(model, folder / "sub.onnx")
    assert_error(run("inspect", folder / "sub.onnx"), 1, "'../outside.bin'", "leaves the model's folder")


@pytest.mark.parametrize("damage", ["missing", "truncated", "folder"])
def test_broken_external_data_is_a_user_error(work, damage):
    folder = work / "in"
    folder.mkdir()
    _save_external(zoo.conv_flatten_gemm(), folder / "m.onnx", "m.bin")
    data = (folder / "m.bin").read_bytes()
    (folder / "m.bin").unlink()
    if damage == "truncated":
        (folder / "m.bin").write_bytes(data[: len(data) // 3])
    if damage == "folder":
        (folder / "m.bin").mkdir()
    before = snapshot(work)
    line = assert_error(run("prune", folder / "m.onnx", "-o", work / "o.onnx"), 1, "m.onnx")
    assert "external data" in line
    assert snapshot(work) == before


# ----------------------------------------------------------------------------------------- failed writes


def _partial_then(exc: BaseException):
    """A stand-in for onnx.save_model that writes half a file, then fails with `exc`."""

    def save(model, f, *args, **kwargs):
        Path(f).write_bytes(model.SerializeToString()[:100])
        raise exc

    return save


@pytest.mark.parametrize("exc, code", [
    (OSError(28, "No space left on device"), 1),
    (RuntimeError("boom"), 5),
    (KeyboardInterrupt(), 130),
])
@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_write_leaves_no_partial_file(work, monkeypatch, exc, code, existing):
    src = work.put("cfg")
    if existing:
        (work / "out.onnx").write_bytes(b"previous output")
    before = snapshot(work)
    monkeypatch.setattr(onnx, "save_model", _partial_then(exc))
    result = run("prune", src, "-o", work / "out.onnx")
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    if code == 1:
        assert_error(result, 1, "out.onnx", "cannot write", "No space left")
    if code == 5:
        assert result.stderr.startswith("internal error: RuntimeError: boom")
    assert snapshot(work) == before  # no partial output, no .onnxprune-* folder, the old output intact


def test_failed_check_keeps_existing_output(work, monkeypatch):
    from onnxprune.validate import InvalidOutputError

    src = work.put("cfg")
    (work / "out.onnx").write_bytes(b"previous output")
    before = snapshot(work)

    def failing_check(dense, pruned, shapes=None, label=None, **_):
        assert Path(pruned).exists()
        raise InvalidOutputError("the pruned model fails the ONNX checker and was not kept: simulated")

    monkeypatch.setattr(onnxprune.cli, "check_runnable", failing_check)
    result = run("prune", src, "-o", work / "out.onnx")
    assert exit_code(result) == 5 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("internal error: the pruned model fails the ONNX checker and was not kept: "
                                     "simulated (a bug: please report it with --debug)")
    assert snapshot(work) == before


def test_a_bug_found_by_a_check_is_not_a_user_error():
    from onnxprune.errors import InternalError, OnnxPruneError
    from onnxprune.validate import InvalidOutputError

    assert issubclass(InvalidOutputError, InternalError) and not issubclass(InvalidOutputError, OnnxPruneError)
    assert InvalidOutputError("x").exit_code == 5


def _shapeless_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its graph output declared without a shape: the checker refuses it, onnxruntime runs it."""
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model


def test_a_model_only_onnxruntime_accepts_is_pruned_and_held_to_its_checks(work):
    src = work / "m.onnx"
    onnx.save(_shapeless_output(chain()), src)
    with pytest.raises(onnx.checker.ValidationError, match="shape"):
        onnx.checker.check_model(str(src))
    result = run("prune", src, "-o", work / "out.onnx", "--round-to", "1")
    assert_ok(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "fails the ONNX checker (Field 'shape' of 'type' is required" in warnings[0]
    assert "onnxruntime runs it" in warnings[0] and "completes the graph inputs' and outputs' types" in warnings[0]
    out = onnx.load(str(work / "out.onnx"))
    assert not out.graph.output[0].type.tensor_type.HasField("shape")  # I/O unchanged, defects included
    assert sum(t.dims[0] for t in out.graph.initializer if t.name == "b.w") == C // 2
    session = ort.InferenceSession(str(work / "out.onnx"))
    assert session.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})[0].shape == (1, 10)


def test_the_pruned_model_may_not_fail_the_checker_more_than_the_input(work):
    from onnxprune.validate import InvalidOutputError, check_runnable

    dense, pruned = work / "dense.onnx", work / "pruned.onnx"
    onnx.save(_shapeless_output(chain()), dense)
    broken = _shapeless_output(chain())
    broken.graph.node[1].attribute.append(h.make_attribute("bogus", 1))  # a node the checker refuses
    onnx.save(broken, pruned)
    with pytest.raises(InvalidOutputError, match="Unrecognized attribute: bogus .*the input model fails it with: "
                                                 "Field 'shape'"):
        check_runnable(dense, pruned)
    assert len(check_runnable(dense, dense)) == 1  # the input itself passes what it is held to, with the warning


def test_a_cyclic_input_still_fails_in_one_line(work):
    model = chain()
    model.graph.node[2].input[0] = "c"  # Conv b reads Conv c's output, which depends on b: a cycle
    src = work / "cyclic.onnx"
    onnx.save(model, src)
    before = snapshot(work)
    assert_error(run("prune", src, "-o", work / "out.onnx", "--round-to", "1"), 1,
                 "fails the ONNX checker", "onnxruntime cannot load it", "acyclic")
    assert snapshot(work) == before


def test_internal_error_is_one_line_and_debug_reraises(work, monkeypatch):
    def broken(*a, **k):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(onnxprune.api, "analyze", broken)
    src = work.put("cfg")
    result = run("inspect", src)
    assert result.exit_code == 5
    assert result.stderr.strip() == "internal error: ZeroDivisionError: division by zero (rerun with --debug)"
    debug = run("--debug", "inspect", src)
    assert debug.exit_code == 5 and "Traceback" in debug.stderr and "ZeroDivisionError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == "internal error: ZeroDivisionError: division by zero"


def test_debug_adds_the_traceback_and_keeps_the_exit_code(tmp_path):
    result = run("inspect", tmp_path / "missing.onnx", "--debug")
    assert result.exit_code == 1 and "Traceback" in result.stderr and "ModelLoadError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    nothing = tmp_path / "nothing.onnx"
    b = Builder()
    b.output(b.op("Relu", [b.input("x", [1, 4])]))
    onnx.save(b.build(), str(nothing))
    plain = run("prune", nothing, "-o", tmp_path / "out.onnx")
    debug = run("prune", nothing, "-o", tmp_path / "out.onnx", "--debug")
    assert plain.exit_code == debug.exit_code == 3
    assert "Traceback" in debug.stderr and "NothingToPruneError" in debug.stderr


# ------------------------------------------------------------------------------------------- happy paths


def test_inspect_table_and_json(work):
    src = work.put("cfg")
    table = run("inspect", src)
    assert_ok(table)
    assert "prunable" in table.stdout and "blocked" in table.stdout
    assert "groups: 4 (3 prunable, 1 blocked)" in table.stdout
    result = run("inspect", src, "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["prunable_groups"] == 3 and report["blocked_groups"] == 1
    assert report["totals"]["params"] > 0 and report["totals"]["macs"] > 0
    for g in report["groups"]:
        assert {"id", "channels", "kept", "prunable", "members", "reasons"} <= set(g)
        assert g["prunable"] == (not g["reasons"])
    assert groups_by_member(report)["conv1"][0]["channels"] == 8


def test_prune_table(work):
    src = work.put("cfg")
    result = run("prune", src, "-o", work / "out.onnx")
    assert_ok(result)
    for word in ("before", "after", "params", "MACs", "file size", "groups:"):
        assert word in result.stdout
    runs(work / "out.onnx")


def test_prune_json_and_written_model(work):
    src = work.put("plain")
    result = run("prune", src, "-o", work / "out.onnx", "--round-to", "1", "--ratio", "0.5", "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["before"]["params"] > report["after"]["params"] > 0
    assert report["before"]["macs"] > report["after"]["macs"] > 0
    assert report["pruned_groups"] == 3 and report["blocked_groups"] == 1
    for g in report["groups"]:
        assert g["kept"] == (C // 2 if g["prunable"] else g["channels"])
    out = onnx.load(work / "out.onnx")
    assert [i.name for i in out.graph.input] == ["x"] and [o.name for o in out.graph.output] == ["logits"]
    assert runs(work / "out.onnx")[0].shape == (1, 10)


def test_prune_unstructured_sparsity(work):
    src = work.put("cfg")
    result = run("prune", src, "-o", work / "out.onnx", "--unstructured", "--sparsity", "0.5", "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    assert abs(report["totals"]["sparsity"] - 0.5) < 0.01
    dense = {t.name: nh.to_array(t) for t in onnx.load(src).graph.initializer}
    out = {t.name: nh.to_array(t) for t in onnx.load(work / "out.onnx").graph.initializer}
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in dense.items()}
    w = out["fc1.weight"]
    assert abs((w == 0).mean() - 0.5) < 0.01
    assert (out["fc1.bias"] == dense["fc1.bias"]).all()  # biases are never touched
    runs(work / "out.onnx")


def test_prune_unstructured_pattern_2_4(work):
    src = work.put("cfg")
    result = run("prune", src, "-o", work / "out.onnx", "--unstructured", "--pattern", "2:4")
    assert_ok(result)
    assert "pattern 2:4" in result.stdout
    out = {t.name: nh.to_array(t) for t in onnx.load(work / "out.onnx").graph.initializer}
    rows = out["conv2.weight"].reshape(16, -1)  # [O, I*kh*kw]: every 4 consecutive weights keep at most 2
    assert ((rows.reshape(16, -1, 4) != 0).sum(axis=-1) <= 2).all()
    runs(work / "out.onnx")


def test_verify_self_passes_and_pruned_fails_gate(work):
    src = work.put("cfg")
    assert_ok(run("prune", src, "-o", work / "small.onnx"))
    same = run("verify", src, src, "--min-cosine", "0.9999")
    assert_ok(same)
    assert "cosine" in same.stdout
    result = run("verify", src, work / "small.onnx", "--min-cosine", "0.9999")
    assert_error(result, 4, "verification failed", "--min-cosine 0.9999")
    assert "FAILED" in result.stdout  # the table is printed before the error


def test_bench_two_models(work):
    src = work.put("cfg")
    assert_ok(run("prune", src, "-o", work / "small.onnx"))
    result = run("bench", src, work / "small.onnx", "--runs", "2", "--warmup", "1", "--rounds", "2")
    assert_ok(result)
    assert "(control)" in result.stdout
    assert "small.onnx" in result.stdout
    result = run("bench", src, work / "small.onnx", "--runs", "2", "--warmup", "1", "--rounds", "1", "--json")
    assert_ok(result)
    json.loads(result.stdout)


def test_nothing_to_prune_names_the_reasons_of_the_biggest_groups_first(tmp_path):
    """A 32-channel 3x3 conv blocked by the graph output holds nearly all MACs; a 2-channel 1x1 conv is blocked by
    a ReduceSum over channels. The error leads with the big group's reason, not the alphabetically first one."""
    rng = np.random.default_rng(0)
    graph = h.make_graph(
        [h.make_node("Conv", ["x", "Wbig"], ["y"], name="big", pads=[1, 1, 1, 1]),
         h.make_node("Conv", ["x", "Wsmall"], ["s"], name="small"),
         h.make_node("ReduceSum", ["s", "axes"], ["z"], name="sum", keepdims=1)],
        "two", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("z", T.FLOAT, None)],
        [nh.from_array(rng.standard_normal((32, 3, 3, 3)).astype(np.float32), "Wbig"),
         nh.from_array(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), "Wsmall"),
         nh.from_array(np.array([1], np.int64), "axes")],
    )
    path = tmp_path / "two.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    line = assert_error(run("prune", path, "-o", tmp_path / "out.onnx", "--round-to", "1"), 3, "nothing to prune")
    assert line.index("graph output 'y'") < line.index("ReduceSum 'sum'")
