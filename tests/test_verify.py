"""verify: random and .npz inputs, per-output statistics, gates, and the `verify` command's exit codes."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from graphs import Builder
from cli_run import run
from onnxprune.errors import OnnxPruneError, OptionError, VerificationError
from onnxprune.inputs import load_inputs_npz, make_inputs
from onnxprune.verify import Gates, compare, format_table


def classifier(scale: float = 1.0, noise: float = 0.0, out_name: str = "logits") -> onnx.ModelProto:
    """x[N, 8] -Gemm(W[8, 5]) -> logits[N, 5]; `noise` perturbs W."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 5)).astype(np.float32) * scale
    w += noise * np.random.default_rng(2).standard_normal((8, 5)).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("Gemm", ["x", "W"], [out_name])], "clf",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 8])],
        [h.make_tensor_value_info(out_name, T.FLOAT, ["N", 5])],
        [nh.from_array(w, "W")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


def text_model() -> onnx.ModelProto:
    """ids[N, S] int64 and mask[N, S] bool -> Gather from an embedding, masked: out[N, S, 4]."""
    emb = nh.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "E")
    nodes = [
        h.make_node("Gather", ["E", "ids"], ["e"]),
        h.make_node("Cast", ["mask"], ["mf"], to=T.FLOAT),
        h.make_node("Unsqueeze", ["mf", "ax"], ["m3"]),
        h.make_node("Mul", ["e", "m3"], ["out"]),
    ]
    graph = h.make_graph(
        nodes, "txt",
        [h.make_tensor_value_info("ids", T.INT64, ["N", "S"]), h.make_tensor_value_info("mask", T.BOOL, ["N", "S"])],
        [h.make_tensor_value_info("out", T.FLOAT, None)],
        [emb, nh.from_array(np.array([2], np.int64), "ax")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


@pytest.fixture
def files(tmp_path):
    dense, same, bad = tmp_path / "dense.onnx", tmp_path / "same.onnx", tmp_path / "bad.onnx"
    onnx.save(classifier(), dense)
    onnx.save(classifier(), same)
    onnx.save(classifier(noise=1.0), bad)
    return dense, same, bad


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def test_make_inputs_shapes_dtypes_and_seed():
    feeds = make_inputs(text_model(), {"ids": [2, 7], "mask": [2, 7]}, samples=3, seed=5)
    assert len(feeds) == 3
    for f in feeds:
        assert f["ids"].dtype == np.int64 and f["ids"].shape == (2, 7)
        assert f["ids"].min() >= 0 and f["ids"].max() < 2
        assert f["mask"].dtype == np.bool_
    again = make_inputs(text_model(), {"ids": [2, 7], "mask": [2, 7]}, samples=3, seed=5)
    assert all(np.array_equal(a["ids"], b["ids"]) for a, b in zip(feeds, again))
    other = make_inputs(classifier(), samples=1, seed=6)[0]["x"]
    assert other.dtype == np.float32 and other.shape == (1, 8)  # dynamic batch filled with 1
    assert not np.array_equal(other, make_inputs(classifier(), samples=1, seed=7)[0]["x"])


def test_make_inputs_bad_shape_is_option_error():
    with pytest.raises(OptionError, match="names no input"):
        make_inputs(classifier(), {"y": [1, 8]})
    with pytest.raises(OptionError, match="samples"):
        make_inputs(classifier(), samples=0)


def test_load_inputs_npz(tmp_path):
    p = tmp_path / "in.npz"
    np.savez(p, x=np.ones((3, 2, 8), np.float32))
    feeds = load_inputs_npz(p, classifier())
    assert len(feeds) == 3 and feeds[0]["x"].shape == (2, 8)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"y": np.ones((1, 1, 8), np.float32)}, "no array for input.*'x'"),
        ({"x": np.ones((1, 1, 8), np.float64)}, "needs dtype float32"),
        ({"x": np.ones(8, np.float32)}, "needs rank 2 .* or 3"),
        ({"x": np.ones((1, 1, 9), np.float32)}, "needs dim 1 = 8"),
        ({"x": np.ones((1, 1, 8), np.float32), "z": np.ones(2)}, "'z' name no input"),
    ],
)
def test_load_inputs_npz_errors(tmp_path, arrays, match):
    p = tmp_path / "in.npz"
    np.savez(p, **arrays)
    with pytest.raises(OptionError, match=match):
        load_inputs_npz(p, classifier())


def test_load_inputs_npz_missing_and_unreadable(tmp_path):
    with pytest.raises(OptionError, match="no such file"):
        load_inputs_npz(tmp_path / "nope.npz", classifier())
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(OptionError, match="not a readable"):
        load_inputs_npz(junk, classifier())
    single = tmp_path / "one.npy"
    np.save(single, np.ones((1, 1, 8), np.float32))
    with pytest.raises(OptionError, match="single array"):
        load_inputs_npz(single, classifier())


def test_load_inputs_npz_sample_counts_differ(tmp_path):
    p = tmp_path / "in.npz"
    np.savez(p, ids=np.zeros((2, 1, 3), np.int64), mask=np.ones((3, 1, 3), bool))
    with pytest.raises(OptionError, match="different numbers of samples"):
        load_inputs_npz(p, text_model())


# ---------------------------------------------------------------------------------------------------------------
# compare


def test_identical_models_pass_with_cosine_one(files):
    dense, same, _ = files
    feeds = make_inputs(dense, {"x": [16, 8]}, samples=2)
    report = compare(dense, same, feeds, gates=Gates(min_cosine=0.999, min_top1=1.0, max_abs=0.0))
    assert report.passed and report.failures == []
    (out,) = report.outputs
    assert out.name == "logits" and out.shape == [16, 5]
    assert out.cosine == 1.0 and out.top1 == 1.0 and out.max_abs == 0.0 and out.rel_error == 0.0
    d = report.to_dict()
    json.dumps(d)
    assert d["passed"] is True and d["outputs"][0]["would_pass_with"]["min_cosine"] == 1.0
    assert "PASSED" in format_table(report)


def test_protos_and_paths_both_work():
    feeds = make_inputs(classifier(), {"x": [4, 8]})
    report = compare(classifier(), classifier(scale=2.0), feeds)
    (out,) = report.outputs
    assert report.passed  # no gates: statistics only
    assert out.cosine == pytest.approx(1.0) and out.top1 == 1.0
    assert out.rel_error == pytest.approx(1.0, rel=1e-5)  # ||2y - y|| / ||y||
    assert out.norm_ratio == pytest.approx(2.0, rel=1e-5)
    assert "statistics only" in format_table(report)


def test_perturbed_model_fails_gates(files):
    dense, _, bad = files
    feeds = make_inputs(dense, {"x": [32, 8]}, samples=2)
    report = compare(dense, bad, feeds,
                     gates=Gates(min_cosine=0.999, min_top1=0.99, max_abs=1e-3, max_rel_error=0.01))
    assert not report.passed
    assert {f.gate for f in report.failures} == {"min_cosine", "min_top1", "max_abs", "max_rel_error"}
    out = report.outputs[0]
    assert out.cosine < 0.999 and out.max_abs > 1e-3 and out.rel_error > 0.01
    # the reported tolerances are exactly what would have passed
    loose = compare(dense, bad, feeds, gates=Gates(min_cosine=out.cosine, min_top1=out.top1, max_abs=out.max_abs,
                                                   max_rel_error=out.rel_error))
    assert loose.passed
    text = format_table(report)
    assert "FAILED: 4 gate(s)" in text and "would pass with --max-rel-error" in text
    assert "--min-top1" in text and "--min-cosine" in text and "--max-abs" in text


def test_min_top1_without_a_classifier_output_is_an_error():
    feeds = make_inputs(text_model(), {"ids": [1, 3], "mask": [1, 3]})
    with pytest.raises(OptionError, match="^min_top1 was given"):
        compare(text_model(), text_model(), feeds, gates=Gates(min_top1=0.9))


def test_different_output_names_is_an_error():
    feeds = make_inputs(classifier(), {"x": [2, 8]})
    with pytest.raises(OnnxPruneError, match="different outputs"):
        compare(classifier(), classifier(out_name="probs"), feeds)


def test_models_taking_other_inputs_are_refused_naming_the_input():
    wide = classifier()
    wide.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 9
    wide.graph.initializer[0].CopyFrom(nh.from_array(np.ones((9, 5), np.float32), "W"))
    with pytest.raises(OnnxPruneError, match=r"^clf: input 'x' is Nx9 float32, but is given 2x8 float32$"):
        compare(classifier(), wide, make_inputs(classifier(), {"x": [2, 8]}))


def test_a_failed_run_is_one_line_with_all_of_onnxruntime_message():
    import onnxruntime as ort

    from onnxprune.session import run_failure

    session = ort.InferenceSession(classifier().SerializeToString())
    feeds = {"x": np.ones((2, 8), np.float32)}
    err = run_failure(session, feeds, "m.onnx", RuntimeError("[ONNXRuntimeError] : 6 : FAILED\n index: 2 Got: 3"))
    assert str(err) == "m.onnx: onnxruntime failed to run: [ONNXRuntimeError] : 6 : FAILED index: 2 Got: 3"
    err = run_failure(session, {"x": np.ones((2, 8), np.float64)}, "m.onnx", RuntimeError("type"))
    assert str(err) == "m.onnx: input 'x' is Nx8 float32, but is given 2x8 float64"
    err = run_failure(session, {"y": np.ones((2, 8), np.float32)}, "m.onnx", RuntimeError("missing"))
    assert str(err) == "m.onnx: it takes inputs ['x'], but is given ['y']"


def test_output_shape_change_fails():
    pruned = classifier()
    pruned.graph.initializer[0].CopyFrom(nh.from_array(np.ones((8, 4), np.float32), "W"))
    pruned.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4
    report = compare(classifier(), pruned, make_inputs(classifier(), {"x": [2, 8]}))
    assert not report.passed and report.failures[0].gate == "shape"


def test_nan_fails_every_gate():
    pruned = classifier()
    w = nh.to_array(pruned.graph.initializer[0]).copy()
    w[0, 0] = np.nan
    pruned.graph.initializer[0].CopyFrom(nh.from_array(w, "W"))
    report = compare(classifier(), pruned, make_inputs(classifier(), {"x": [4, 8]}),
                     gates=Gates(min_cosine=-1.0, max_abs=1e9))
    assert {f.gate for f in report.failures} == {"min_cosine", "max_abs"}
    json.dumps(report.to_dict())  # NaN is written as a string, the JSON stays standard


def test_bad_gates_and_missing_file(tmp_path):
    with pytest.raises(OptionError, match="^min_cosine must lie in"):
        compare(classifier(), classifier(), [], gates=Gates(min_cosine=2.0))
    with pytest.raises(OnnxPruneError, match="no such file"):
        compare(tmp_path / "nope.onnx", classifier(), make_inputs(classifier()))


# ---------------------------------------------------------------------------------------------------------------
# The command, through the real entry point (tests/test_cli.run)


def _invoke(*args):
    return run("verify", *args)


def test_cli_identical_passes(files):
    dense, same, _ = files
    r = _invoke(dense, same, "--shape", "x=4x8", "--samples", "2", "--min-cosine", "0.999", "--min-top1", "1")
    assert r.exit_code == 0, r.output
    assert "PASSED" in r.output


def test_cli_perturbed_exits_4_after_the_table(files):
    dense, _, bad = files
    r = _invoke(dense, bad, "--shape", "x=16x8", "--min-cosine", "0.999")
    assert r.exit_code == VerificationError.exit_code == 4
    assert "cosine" in r.output and "FAILED" in r.output
    assert r.output.index("FAILED") < r.output.index("error: verification failed")


def test_cli_json(files):
    dense, _, bad = files
    r = _invoke(dense, bad, "--json", "--max-abs", "1e-6")
    assert r.exit_code == 4
    payload = r.stdout[: r.stdout.rindex("}") + 1]
    d = json.loads(payload)
    assert d["passed"] is False and d["failures"][0]["gate"] == "max_abs"


def test_cli_data_and_errors(files, tmp_path):
    dense, same, _ = files
    p = tmp_path / "in.npz"
    np.savez(p, x=np.ones((2, 3, 8), np.float32))
    assert _invoke(dense, same, "--data", p).exit_code == 0
    r = _invoke(dense, same, "--data", p, "--samples", "3")
    assert r.exit_code == 1 and "drop --shape and --samples" in r.output
    np.savez(p, x=np.ones((2, 3, 8), np.float64))
    r = _invoke(dense, same, "--data", p)
    assert r.exit_code == 1 and "dtype" in r.output and "Traceback" not in r.output
    r = _invoke(dense, same, "--shape", "x=4")
    assert r.exit_code == 1 and "rank" in r.output
    r = _invoke(dense, tmp_path / "missing.onnx")
    assert r.exit_code == 1 and "no such file" in r.output


def test_cli_compares_a_dynamic_sequence_at_its_generic_size_and_says_so(tmp_path):
    path = tmp_path / "text.onnx"
    onnx.save(text_model(), path)
    r = _invoke(path, path)
    assert r.exit_code == 0
    assert ("note: input 'ids': dynamic dims [1] not pinned: the outputs are compared at generic sizes 13; pin real "
            "sizes with --shape ids=1x<S>") in r.output
    assert "ids[1, 13], mask[1, 13]" in r.output, "batch 1, the sequence never 1 (a 1x1 image has no signal)"
    r = _invoke(path, path, "--shape", "ids=2x7")
    assert r.exit_code == 0 and "note: input" not in r.output and "ids[2, 7], mask[2, 7]" in r.output


# ---------------------------------------------------------------------------------------------------------------
# What each statistic can miss


def heat_map(halved: bool = False) -> onnx.ModelProto:
    """x[1, 3, 16, 16] -> Conv -> Relu -> Conv(1) -> Sigmoid(0.1 z + 3) -> heat[1, 1, 16, 16], mean ~0.94.
    `halved`: a damaged variant whose map keeps its pattern (head weights x1.1) at half the level (x0.494)."""
    b = Builder(seed=3)
    x = b.input("x", [1, 3, 16, 16])
    z = b.conv(b.op("Relu", [b.conv(x, 3, 8, name="c1")]), 8, 1, name="head", bias=False)
    z = b.op("Add", [b.op("Mul", [z, b.scalar(0.11 if halved else 0.1)]), b.scalar(3.0)])
    heat = b.op("Sigmoid", [z], name="sig" if halved else "heat")
    if halved:
        heat = b.op("Mul", [heat, b.scalar(0.494)], name="heat")
    b.output(heat, shape=[1, 1, 16, 16])
    return b.build()


def test_a_halved_heat_map_fails_the_recommended_gate_and_cosine_is_flagged():
    dense, pruned = heat_map(), heat_map(halved=True)
    report = compare(dense, pruned, make_inputs(dense, samples=4), gates=Gates(min_cosine=0.99))
    (out,) = report.outputs
    assert report.passed and out.cosine > 0.999  # what cosine alone says: near-perfect
    assert out.mean_dense > 0.9 and out.mean_pruned < 0.5
    assert out.rel_error == pytest.approx(0.5, abs=0.05) and out.norm_ratio == pytest.approx(0.49, abs=0.02)
    assert out.cosine_floor > 0.98 and not out.cosine_informative
    # the statistic verify leads with, gated well below the damage, fails it
    assert list(out.tolerance)[0] == "max_rel_error" and "min_cosine" not in out.tolerance
    assert not compare(dense, pruned, make_inputs(dense, samples=4), gates=Gates(max_rel_error=0.1)).passed
    text = format_table(report)
    assert "would pass with --max-rel-error 0.5" in text and "--min-cosine 0.99" not in text.split("gates:")[0]
    assert "heat: warning: cosine says little here" in text and "so even a constant output scores 0.98" in text
    assert "0.9998" in text and "(!)" in text
    assert "warning: --min-cosine says little for 'heat'" in text.split("gates:")[1]  # beside the verdict it gave
    assert report.to_dict()["gate_warnings"] == report.gate_warnings != []
    d = report.to_dict()["outputs"][0]
    assert list(d["would_pass_with"]) == ["max_rel_error", "max_abs"] and d["warnings"] == out.warnings
    assert d["rel_error"] == out.rel_error and d["cosine_floor"] == out.cosine_floor
    # a faithful copy gets the same warning (it is about the output, not the damage) and passes
    same = compare(dense, heat_map(), make_inputs(dense, samples=2), gates=Gates(max_rel_error=1e-6))
    assert same.passed and same.outputs[0].warnings


def test_a_scale_change_is_flagged_beside_cosine():
    feeds = make_inputs(classifier(), {"x": [32, 8]})
    (out,) = compare(classifier(), classifier(scale=0.5), feeds).outputs
    assert out.cosine == pytest.approx(1.0) and out.cosine_informative
    assert out.rel_error == pytest.approx(0.5, rel=1e-5) and out.norm_ratio == pytest.approx(0.5, rel=1e-5)
    assert out.warnings and "cosine ignores scale" in out.warnings[0]
    (faithful,) = compare(classifier(), classifier(noise=0.01), feeds).outputs
    assert faithful.warnings == []  # logits centred on 0: cosine informative, the error is not scale


def heads(bits_op: str = "Sigmoid") -> onnx.ModelProto:
    """x[N, 8] -> logits[N, 5] (Gemm), probs[N, 5] (Softmax), bits[N, 32] (`bits_op` of a Gemm)."""
    b = Builder(seed=4)
    x = b.input("x", ["N", 8])
    logits = b.gemm(x, 8, 5, name="logits")
    probs = b.op("Softmax", [logits], name="probs", axis=1)
    z = b.gemm(x, 8, 32, name="bits_fc")
    bits = (b.op("Clip", [z, b.scalar(0.0), b.scalar(1.0)], name="bits") if bits_op == "Clip"
            else b.op(bits_op, [z], name="bits"))
    b.output(logits, probs, bits)
    return b.build()


@pytest.mark.parametrize("bits_op", ["Sigmoid", "Clip"])
def test_top1_only_for_outputs_that_look_like_class_scores(bits_op):
    model = heads(bits_op)
    report = compare(model, model, make_inputs(model, {"x": [16, 8]}))
    out = {o.name: o for o in report.outputs}
    assert out["logits"].top1 == 1.0 and out["logits"].top1_rows == 16
    assert out["probs"].top1 == 1.0  # softmax rows sum to 1: one class per row
    assert out["bits"].top1 is None and "min_top1" not in out["bits"].tolerance
    why = "Sigmoid output" if bits_op == "Sigmoid" else "values in [0, 1] whose rows do not sum to 1"
    assert why in out["bits"].not_classes
    assert f"bits: no top-1: {why}" in format_table(report)


def test_min_top1_on_bits_alone_is_refused_with_the_reason():
    b = Builder(seed=5)
    b.output(b.op("Sigmoid", [b.gemm(b.input("x", ["N", 8]), 8, 32, name="fc")], name="bits"))
    model = b.build()
    with pytest.raises(OptionError, match=r"no output looks like class scores .*'bits': Sigmoid output"):
        compare(model, model, make_inputs(model, {"x": [4, 8]}), gates=Gates(min_top1=0.9))


def test_bad_max_rel_error():
    with pytest.raises(OptionError, match="^max_rel_error must be >= 0"):
        compare(classifier(), classifier(), make_inputs(classifier()), gates=Gates(max_rel_error=-1))


# ---------------------------------------------------------------------------------------------------------------
# Where the inputs come from


def test_cli_says_the_inputs_are_random_and_what_that_means(files, tmp_path):
    dense, same, bad = files
    r = _invoke(dense, bad, "--shape", "x=4x8")
    assert r.exit_code == 0
    assert "4 batch(es) of random inputs" in r.output
    assert "note: random inputs: the numbers measure how much the function changed on noise, not accuracy" in r.output
    assert "expected right after pruning without calibration data" in r.output  # rel_err ~0.7 here
    assert "expected right after pruning" not in _invoke(dense, same).output  # no change: no such note
    p = tmp_path / "in.npz"
    np.savez(p, x=np.ones((2, 3, 8), np.float32))
    r = _invoke(dense, bad, "--data", p)
    assert r.exit_code == 0 and f"inputs from --data {p}" in r.output and "random" not in r.output
    assert json.loads(_invoke(dense, bad, "--json").stdout)["inputs"] == "random"


def test_cli_json_warns_of_a_cosine_gate_that_says_little(tmp_path):
    dense, pruned = tmp_path / "heat.onnx", tmp_path / "half.onnx"
    onnx.save(heat_map(), dense)
    onnx.save(heat_map(halved=True), pruned)
    r = _invoke(dense, pruned, "--json", "--min-cosine", "0.99")
    assert r.exit_code == 0 and json.loads(r.stdout)["gate_warnings"]
    assert r.stderr.startswith("warning: --min-cosine says little for 'heat'")
    assert _invoke(dense, pruned, "--max-rel-error", "0.1").exit_code == 4


def test_cli_max_rel_error_gate(files):
    dense, same, bad = files
    assert _invoke(dense, same, "--max-rel-error", "0").exit_code == 0
    r = _invoke(dense, bad, "--max-rel-error", "0.05")
    assert r.exit_code == 4 and "relative error" in r.output and "> --max-rel-error 0.05" in r.output
    r = _invoke(dense, bad, "--max-rel-error", "-1")
    assert r.exit_code == 1 and "--max-rel-error must be >= 0" in r.stderr


def test_cli_data_images(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    from graphs import image_model

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        pil.fromarray((np.random.default_rng(i).random((10, 12, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    model = tmp_path / "m.onnx"
    onnx.save(image_model(), model)
    r = _invoke(model, model, "--data-images", folder, "--size", "8x8", "--mean", "0.5", "--std", "0.25",
                "--min-top1", "1")
    assert r.exit_code == 0, r.output
    assert f"1 batch(es) of inputs from --data-images {folder}; inputs x[5, 3, 8, 8]" in r.output
    assert "random" not in r.output and "PASSED" in r.output
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(5, np.int64))
    r = _invoke(model, model, "--data-images", folder, "--labels", labels)
    assert r.exit_code == 0 and "accuracy on 5 labelled samples" in r.output
    for args, message in [
        (("--size", "8x8"), "--size is for --data-images"),
        (("--layout", "NHWC"), "--layout is for --data-images"),
        (("--data-images", folder, "--samples", "2"), "--data-images gives the inputs"),
        (("--data-images", folder, "--data", labels), "exclusive"),
        (("--data-images", tmp_path / "none"), "not a folder"),
        (("--data-images", folder, "--layout", "NHWC"), "channels on the NHWC channel axis"),
    ]:
        r = _invoke(model, model, *args)
        assert r.exit_code == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.output)


def test_image_options_are_declared_once_for_both_commands():
    from onnxprune.cli import cli

    def options(command):
        return {p.name: p for p in cli.commands[command].params}

    prune, verify = options("prune"), options("verify")
    for name in ("size", "mean", "std", "layout"):
        assert prune[name].help == verify[name].help and prune[name].default == verify[name].default
    r = run("prune", "m.onnx", "-o", "p.onnx", "--mean", "0.5")
    assert r.exit_code == 1 and "--mean is for --calib-images" in r.stderr


def test_a_constant_dense_output_is_flagged_and_no_gate_is_judged_on_constants_alone():
    """A 1x1 image through a detector gives all-zero maps: every statistic passes whatever the pruned model
    computes, so verify says so, and refuses to pass or fail a gate on nothing else."""
    zero = nh.from_array(np.zeros((1,), np.float32), "zero")
    graph = h.make_graph([h.make_node("Mul", ["x", "zero"], ["y"])], "flat",
                         [h.make_tensor_value_info("x", T.FLOAT, [1, 6])], [h.make_tensor_value_info("y", T.FLOAT, None)],
                         [zero])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)
    feeds = make_inputs(model, samples=2)
    report = compare(model, model, feeds)
    assert report.outputs[0].constant and "constant (0) on these inputs" in report.outputs[0].warnings[0]
    assert "constant (0)" in format_table(report)
    with pytest.raises(OptionError, match="every output of the dense model is constant"):
        compare(model, model, feeds, gates=Gates(max_rel_error=0.01))
    assert not compare(classifier(), classifier(), make_inputs(classifier(), {"x": [2, 8]})).outputs[0].constant


def test_top1_over_few_rows_gets_a_warning():
    (few,) = compare(classifier(), classifier(), make_inputs(classifier(), {"x": [1, 8]}, samples=4)).outputs
    assert few.top1_rows == 4 and "over 4 row(s) only" in few.warnings[-1]
    (many,) = compare(classifier(), classifier(), make_inputs(classifier(), {"x": [32, 8]})).outputs
    assert not any("row(s) only" in w for w in many.warnings)
