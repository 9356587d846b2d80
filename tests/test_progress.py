"""Long work shows progress where stderr is not a terminal (a CI log, a pipe): one line per step, for every long
stage (calibration loading, scores, recovery, bench rounds, sweep, verify)."""

from __future__ import annotations

import io
from pathlib import Path

import onnx

from onnxprune.progress import LINES, Progress

from cli_run import run
from graphs import image_folder, image_model

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_counted_steps_print_a_bounded_number_of_lines():
    out = io.StringIO()
    with Progress("recovery passes", 1000, unit="samples", stream=out, tty=False) as p:
        for done in range(1, 1001):
            p.update(done)
    lines = out.getvalue().splitlines()
    assert LINES <= len(lines) <= LINES + 1 and lines[-1] == "recovery passes: 1000/1000 samples"
    assert all(line.startswith("recovery passes: ") for line in lines)


def test_named_steps_print_every_step():
    out = io.StringIO()
    p = Progress("bench", stream=out, tty=False)
    for r in (1, 2, 3):
        p.step(f"round {r}/3")
    assert out.getvalue().splitlines() == ["bench: round 1/3", "bench: round 2/3", "bench: round 3/3"]


def test_prune_with_calibration_shows_each_stage_when_piped(tmp_path):
    result = run("prune", MODELS / "digits_cnn.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.3", "--round-to", "1",
                 "--calib", MODELS / "digits_calib.npz", "--calib-samples", "64", "--criterion", "wanda")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "loading calibration data: 64/64 samples" in lines
    assert any(line.startswith("scoring channels on calibration data: ") for line in lines)
    recovery = [line for line in lines if line.startswith("recovery passes: ")]
    assert len(recovery) >= 2 and recovery[-1].split(": ")[1].split("/")[0] == recovery[-1].split("/")[1].split()[0]


def test_image_calibration_loading_reports_images(tmp_path):
    images = image_folder(tmp_path / "images", 8)
    model = tmp_path / "m.onnx"
    onnx.save(image_model(), model)
    result = run("prune", model, "-o", tmp_path / "p.onnx", "--round-to", "1", "--calib-images", images, "--size", "8x8")
    assert result.exit_code == 0, result.output
    assert "loading calibration data: 8/8 samples" in result.stderr.splitlines()


def test_bench_reports_each_round(tmp_path):
    result = run("bench", MODELS / "digits_cnn.onnx", "--warmup", "1", "--runs", "1", "--rounds", "3")
    assert result.exit_code == 0, result.output
    rounds = [line for line in result.stderr.splitlines() if ": round " in line]
    assert [line.rsplit(" ", 1)[1] for line in rounds] == ["1/3", "2/3", "3/3"]
    assert all(line.startswith("bench: ") for line in rounds)


def test_verify_reports_reading_images_and_each_batch(tmp_path):
    images = image_folder(tmp_path / "images", 5)
    model = tmp_path / "m.onnx"
    onnx.save(image_model(), model)
    result = run("verify", model, model, "--data-images", images, "--size", "8x8")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("reading images: ")][-1] == "reading images: 5/5 images"
    assert "running both models: 1/1 batches" in lines
    result = run("verify", MODELS / "digits_cnn.onnx", MODELS / "digits_cnn.onnx", "--data", MODELS / "digits_test.npz")
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("running both models: ")] == [
        f"running both models: {n}/16 batches" for n in range(1, 17)]  # 1000 samples, 64 at a time
