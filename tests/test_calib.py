"""Calibration inputs (calib.py) and the CLI options that use them: --calib, --calib-images, --recover,
--criterion activation|wanda, and verify --labels / --max-accuracy-drop."""

import json

import numpy as np
import onnx
import pytest
from graphs import Builder, image_folder, image_model
from onnxprune.calib import ImageOptions, check_arrays, load_images, parse_size
from onnxprune.errors import OptionError
from cli_run import run as invoke


def test_rows_and_stacked_forms():
    model = image_model()
    rows = check_arrays({"x": np.zeros((10, 3, 8, 8), np.float32)}, model, "t")
    assert rows.count == 10 and not rows.stacked
    assert [f["x"].shape[0] for f in rows.feeds(4)] == [4, 4, 2]
    stacked = check_arrays({"x": np.zeros((5, 2, 3, 8, 8), np.float32)}, model, "t")
    assert stacked.count == 5 and stacked.stacked and all(f["x"].shape == (2, 3, 8, 8) for f in stacked.feeds(4))
    fixed = check_arrays({"x": np.zeros((6, 3, 8, 8), np.float32)}, image_model(batch=2), "t")
    assert [f["x"].shape[0] for f in fixed.feeds(4)] == [2, 2, 2]
    with pytest.raises(OptionError, match="multiple of 2"):
        check_arrays({"x": np.zeros((5, 3, 8, 8), np.float32)}, image_model(batch=2), "t")
    with pytest.raises(OptionError, match="needs rank 4 .* or 5"):
        check_arrays({"x": np.zeros((5, 8, 8), np.float32)}, model, "t")
    assert rows.take(3).count == 3


def test_parse_size():
    assert parse_size("224") == (224, 224) and parse_size("32x48") == (32, 48)
    with pytest.raises(OptionError, match="HEIGHTxWIDTH"):
        parse_size("big")


def test_images_folder(tmp_path):
    image_folder(tmp_path, 9)
    (tmp_path / "notes.txt").write_text("not an image")
    options = ImageOptions(mean=(0.5,), std=(0.25,), layout="NCHW")
    samples = load_images(tmp_path, image_model(), options)
    x = samples.arrays["x"]
    assert x.shape == (9, 3, 8, 8) and x.dtype == np.float32
    assert -2.0 - 1e-6 <= x.min() and x.max() <= 2.0 + 1e-6  # (p/255 - 0.5) / 0.25
    with pytest.raises(OptionError, match="3 values for an input with 1 channels"):
        load_images(tmp_path, image_model(channels=1), ImageOptions(mean=(0.1, 0.2, 0.3)))
    model = tmp_path / "m.onnx"
    onnx.save(image_model(), model)
    r = invoke("prune", model, "-o", tmp_path / "p.onnx", "--round-to", "1", "--calib-images", tmp_path,
               "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--size", "8x8")
    assert r.exit_code == 0 and "recovery all" in r.output and "on 9 calibration samples" in r.output, r.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="no image files"):
        load_images(tmp_path / "empty", image_model(), options)


def test_cli_prune_with_calibration(files, tmp_path):
    model, calib = files
    out = tmp_path / "p.onnx"
    r = invoke("prune", model, "-o", out, "--ratio", "0.5", "--round-to", "1", "--calib", calib, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):])
    assert report["options"]["recover"] == "all" and report["options"]["calib_samples"] == 32
    assert report["recovery"]["layers"] and report["recovery"]["passes"] >= 2
    r = invoke("prune", model, "-o", out, "--round-to", "1", "--calib", calib, "--criterion", "wanda",
               "--recover", "lsq", "--force")
    assert r.exit_code == 0, r.output
    assert "recovery lsq" in r.output


@pytest.mark.parametrize("args, message", [
    (["--recover", "lsq"], "needs calibration data"),
    (["--criterion", "activation"], "needs calibration data"),
    (["--calib", "missing.npz"], "no such file"),
    (["--calib", "CALIB", "--calib-images", "."], "exclusive"),
    (["--calib", "CALIB", "--unstructured", "--sparsity", "0.5"], "not --unstructured"),
    (["--calib", "CALIB", "--calib-samples", "4"], "at least 8"),
])
def test_cli_calibration_errors(files, tmp_path, args, message):
    model, calib = files
    args = [str(calib) if a == "CALIB" else a for a in args]
    r = invoke("prune", model, "-o", tmp_path / "p.onnx", *args)
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output


def test_cli_verify_accuracy_gate(files, tmp_path):
    model, calib = files
    x = np.load(calib)["x"]
    import onnxruntime as ort

    labels = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(1).astype(np.int64)
    np.save(tmp_path / "y.npy", labels)
    pruned = tmp_path / "p.onnx"
    assert invoke("prune", model, "-o", pruned, "--ratio", "0.75", "--round-to", "1").exit_code == 0
    r = invoke("verify", model, model, "--data", calib, "--labels", tmp_path / "y.npy", "--max-accuracy-drop", "0")
    assert r.exit_code == 0 and "dense 1.0000, pruned 1.0000" in r.output, r.output
    r = invoke("verify", model, pruned, "--data", calib, "--labels", tmp_path / "y.npy", "--max-accuracy-drop", "0.0",
               "--json")
    report = json.loads(r.stdout)
    assert report["accuracy"]["dense"] == 1.0 and report["accuracy"]["samples"] == 32
    if report["accuracy"]["pruned"] < 1.0:
        assert r.exit_code == 4 and report["failures"][0]["gate"] == "max_accuracy_drop"
    np.save(tmp_path / "short.npy", labels[:5])
    r = invoke("verify", model, model, "--data", calib, "--labels", tmp_path / "short.npy")
    assert r.exit_code == 1 and "5 labels for 32 samples" in r.output
    r = invoke("verify", model, model, "--labels", tmp_path / "y.npy")
    assert r.exit_code == 1 and "--data" in r.output
    r = invoke("verify", model, model, "--data", calib, "--max-accuracy-drop", "0.01")
    assert r.exit_code == 1 and "needs --labels" in r.output



def test_macs_are_counted_at_the_calibration_data_sizes(tmp_path):
    """Frames [N, 3, T, H, W] with T, H and W dynamic: MACs are counted at the calibration clips' sizes (per
    sample), and the report says so."""
    b = Builder(seed=3)
    x = b.input("frames", ["N", 3, "T", "H", "W"])
    y = b.op("Relu", [b.conv(x, 3, 16, dims=3, name="c1")])
    y = b.op("Relu", [b.conv(y, 16, 16, dims=3, name="c2")])
    b.output(b.conv(y, 16, 4, dims=3, name="c3"), shape=["N", 4, "T", "H", "W"])
    model, calib = tmp_path / "clips.onnx", tmp_path / "clips.npz"
    onnx.save(b.build(), model)
    np.savez(calib, frames=np.random.default_rng(0).standard_normal((8, 3, 2, 12, 10)).astype(np.float32))
    r = invoke("prune", model, "-o", tmp_path / "p.onnx", "--round-to", "1", "--calib", calib, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):])
    assert report["input_shapes"] == {"frames": [1, 3, 2, 12, 10]}
    assert "input 'frames': dynamic dims [2, 3, 4] not pinned: MACs counted at the calibration data's sizes " \
           "2x12x10" in report["notes"]
    # c1 reads 3 channels, c2 and c3 read 16 (8 kept), each 3x3x3 over 2x12x10 positions; c1 writes 16 (8 kept)
    position = 2 * 12 * 10 * 27
    assert report["before"]["macs"] == position * (3 * 16 + 16 * 16 + 16 * 4)
    assert report["after"]["macs"] == position * (3 * 8 + 8 * 8 + 8 * 4)


def test_mixed_sample_forms_say_which_form_works():
    from onnx import TensorProto as T
    from onnx import helper as hp

    graph = hp.make_graph([hp.make_node("Identity", ["x"], ["y"]), hp.make_node("Identity", ["state"], ["s"])], "g",
                          [hp.make_tensor_value_info("x", T.FLOAT, ["batch", 4]),
                           hp.make_tensor_value_info("state", T.FLOAT, [2, "batch", 3])],
                          [hp.make_tensor_value_info("y", T.FLOAT, None), hp.make_tensor_value_info("s", T.FLOAT, None)])
    model = hp.make_model(graph, opset_imports=[hp.make_opsetid("", 17)])
    with pytest.raises(OptionError, match="give every input one more axis than the model's"):
        check_arrays({"x": np.zeros((5, 4), np.float32), "state": np.zeros((5, 2, 1, 3), np.float32)}, model, "--calib")
    assert check_arrays({"x": np.zeros((5, 1, 4), np.float32), "state": np.zeros((5, 2, 1, 3), np.float32)},
                        model, "--calib").count == 5
