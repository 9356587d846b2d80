"""Fine-tuning by distillation: the training loop, `onnxprune finetune`, `prune --finetune-epochs`, and the core
package staying torch-free. Tiny runs (a pruned digit CNN, 64 samples, 1-2 epochs): accuracy targets live in
benchmarks/finetune.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxprune
from onnxprune.calib import load_npz
from onnxprune.errors import OptionError
from onnxprune.finetune.train import FinetuneOptions, Progress, finetune
from cli_run import assert_error, assert_ok, run

ROOT = Path(__file__).resolve().parent.parent
DENSE = ROOT / "models" / "digits_cnn.onnx"
N = 64


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digit CNN pruned at 0.5 (no recovery, so that training has something to win back), 64 test images
    with labels, written to a folder."""
    folder = tmp_path_factory.mktemp("ft")
    x = np.load(ROOT / "models" / "digits_test.npz")["input"][:N]
    y = np.load(ROOT / "models" / "digits_test_labels.npy")[:N]
    np.savez(folder / "x.npz", input=x)
    np.save(folder / "y.npy", y)
    result = onnxprune.prune(DENSE, ratio=0.5, round_to=1)
    result.save(folder / "pruned.onnx")
    return folder


def _outputs(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _quick(**kw) -> FinetuneOptions:
    return FinetuneOptions(**{"epochs": 2, "batch_size": 16, "lr": 1e-3, **kw})


def test_held_out_loss_counts_augmented_views_of_the_held_out_images(digits, monkeypatch):
    """Recovery fits the pruned model to the calibration samples, the held-out ones included: their loss alone
    would pick epoch 0 every time. Fixed augmented views of them join the held-out loss (image inputs only)."""
    from onnxprune.finetune import train

    pruned = onnx.load(digits / "pruned.onnx")
    samples = load_npz(digits / "x.npz", pruned)
    losses = {}
    for views in (0, train.HELD_OUT_VIEWS):
        monkeypatch.setattr(train, "HELD_OUT_VIEWS", views)
        for augment in (True, False):
            _, report = finetune(pruned, str(DENSE), samples, options=_quick(epochs=1, augment=augment))
            losses[views, augment] = report.before.heldout_loss
    assert losses[0, True] == losses[0, False] == losses[train.HELD_OUT_VIEWS, False]
    assert losses[train.HELD_OUT_VIEWS, True] != losses[0, True]  # the views are in it, and only with augment


def test_distillation_brings_the_pruned_model_closer_to_the_teacher(digits):
    pruned = onnx.load(digits / "pruned.onnx")
    samples = load_npz(digits / "x.npz", pruned)
    model, report = finetune(pruned, str(DENSE), samples, options=_quick(epochs=3, augment=False))
    assert report.train_samples + report.heldout_samples == N and report.heldout_samples == 6
    assert [e.epoch for e in report.epochs] == [0, 1, 2, 3]
    assert report.best.heldout_loss < report.before.heldout_loss  # 3 epochs from an unrecovered start
    assert report.check_max_diff is not None and report.check_max_diff < 1e-3
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in pruned.graph.node]
    assert model.opset_import == pruned.opset_import
    assert [i.name for i in model.graph.input] == [i.name for i in pruned.graph.input]
    x = np.load(digits / "x.npz")["input"]
    teacher = _outputs(DENSE, x)
    before = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(after - teacher).mean() < np.abs(before - teacher).mean()
    # the input model is untouched
    assert onnx.load(digits / "pruned.onnx").SerializeToString() == pruned.SerializeToString()


def test_ctrl_c_keeps_the_best_model_so_far(digits):
    class StopAtStep(Progress):
        steps = 0

        def step(self, loss):
            self.steps += 1
            if self.steps == 5:
                raise KeyboardInterrupt

    pruned = onnx.load(digits / "pruned.onnx")
    model, report = finetune(pruned, str(DENSE), load_npz(digits / "x.npz", pruned), options=_quick(epochs=5),
                             progress=StopAtStep())
    assert report.stopped == "interrupted" and report.epochs[-1].epoch == 1
    onnx.checker.check_model(model, full_check=True)


def test_labels_add_a_task_loss_and_held_out_accuracy(digits):
    pruned = onnx.load(digits / "pruned.onnx")
    labels = np.load(digits / "y.npy")
    _, report = finetune(pruned, str(DENSE), load_npz(digits / "x.npz", pruned), labels, options=_quick(epochs=1))
    assert all(e.accuracy is not None for e in report.epochs)
    assert report.augmented  # a [N, 1, 28, 28] float input is an image
    with pytest.raises(OptionError, match="holds 10 labels for 64 samples"):
        finetune(pruned, str(DENSE), load_npz(digits / "x.npz", pruned), labels[:10], options=_quick())


def test_softmax_outputs_are_matched_as_probabilities(digits, tmp_path):
    def with_softmax(path, out):
        m = onnx.load(path)
        last = m.graph.output[0]
        node = onnx.helper.make_node("Softmax", [last.name], ["probs"], axis=1)
        m.graph.node.append(node)
        m.graph.output[0].name = "probs"
        onnx.save(m, out)
        return out

    dense = with_softmax(DENSE, tmp_path / "dense.onnx")
    pruned = onnx.load(with_softmax(digits / "pruned.onnx", tmp_path / "pruned.onnx"))
    _, report = finetune(pruned, str(dense), load_npz(digits / "x.npz", pruned), options=_quick(epochs=1))
    assert report.probabilities == ["probs"]
    assert report.best.agreement is not None


def test_cli_finetune_writes_a_checked_model_with_a_line_per_epoch(digits, tmp_path):
    out = tmp_path / "tuned.onnx"
    result = run("finetune", digits / "pruned.onnx", "--teacher", DENSE, "--data", digits / "x.npz",
                 "--labels", digits / "y.npy", "-o", out, "--epochs", 2, "--batch-size", 16, "--samples", 48)
    assert_ok(result)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]  # stderr is not a terminal here
    assert "held-out loss" in lines[0] and "accuracy" in lines[0]
    assert "fine-tuned 2 epoch(s) on 43 samples (5 held out)" in result.stdout
    onnx.checker.check_model(str(out), full_check=True)
    assert _outputs(out, np.load(digits / "x.npz")["input"]).shape == (N, 10)


def test_cli_max_minutes_stops_and_writes_the_best_model(digits, tmp_path):
    out = tmp_path / "tuned.onnx"
    result = run("finetune", digits / "pruned.onnx", "--teacher", DENSE, "--data", digits / "x.npz", "-o", out,
                 "--epochs", 50, "--max-minutes", 0.0001, "--json")
    assert_ok(result)
    assert '"stopped": "time limit"' in result.stdout
    onnx.checker.check_model(str(out), full_check=True)


@pytest.mark.parametrize("arrays,labels,needle", [
    ({"image": np.zeros((8, 1, 28, 28), np.float32)}, None, "no array for input(s) 'input'"),
    ({"input": np.zeros((8, 1, 28, 28), np.float64)}, None, "needs dtype float32"),
    ({"input": np.zeros((8, 1, 32, 32), np.float32)}, None, "needs dim 2 = 28"),
    ({"input": np.zeros((8, 1, 28, 28), np.float32)}, np.zeros(7, np.int64), "holds 7 labels for 8 samples"),
])
def test_cli_bad_data_one_line_before_training(digits, tmp_path, arrays, labels, needle):
    np.savez(tmp_path / "bad.npz", **arrays)
    args = ["finetune", digits / "pruned.onnx", "--teacher", DENSE, "--data", tmp_path / "bad.npz",
            "-o", tmp_path / "out.onnx"]
    if labels is not None:
        np.save(tmp_path / "bad_y.npy", labels)
        args += ["--labels", tmp_path / "bad_y.npy"]
    result = run(*args)
    assert_error(result, 1, needle)
    assert not (tmp_path / "out.onnx").exists()


def test_cli_wrong_teacher_one_line(digits, tmp_path):
    result = run("finetune", digits / "pruned.onnx", "--teacher", ROOT / "models" / "resnet_tiny_ts.onnx",
                 "--data", digits / "x.npz", "-o", tmp_path / "out.onnx")
    assert_error(result, 1, "the teacher", "is given 1x1x28x28")


def test_prune_then_recover_then_finetune_in_one_command(digits, tmp_path):
    out = tmp_path / "p.onnx"
    result = run("prune", DENSE, "-o", out, "--ratio", 0.5, "--round-to", 1, "--calib", digits / "x.npz",
                 "--finetune-epochs", 1, "--json")
    assert_ok(result)
    assert '"finetune": {' in result.stdout and '"recovery": {' in result.stdout
    assert "epoch 1/1:" in result.stderr
    onnx.checker.check_model(str(out), full_check=True)
    with pytest.raises(OptionError, match="needs training inputs"):
        onnxprune.prune(DENSE, ratio=0.5, finetune_epochs=1)


def test_core_package_runs_without_torch(digits, tmp_path):
    """torch is imported only by onnxprune.finetune: with it blocked, the CLI prunes, and finetune says what to
    install in one line."""
    script = f"""
import sys
sys.modules["torch"] = None
from onnxprune.cli import main
try:
    main(["prune", {str(DENSE)!r}, "-o", {str(tmp_path / 'p.onnx')!r}, "--ratio", "0.5", "--calib", {str(digits / 'x.npz')!r}])
except SystemExit as e:
    assert not e.code, e.code
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
main(["finetune", {str(digits / 'pruned.onnx')!r}, "--teacher", {str(DENSE)!r}, "--data", {str(digits / 'x.npz')!r},
      "-o", {str(tmp_path / 'f.onnx')!r}])
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ONNXPRUNE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: fine-tuning needs PyTorch: pip install 'onnxprune[finetune]'"
    assert (tmp_path / "p.onnx").exists() and not (tmp_path / "f.onnx").exists()


def test_finetune_after_depth_pruning_learns_from_the_model_before_the_depth_stage():
    result = onnxprune.prune(ROOT / "models" / "digits_resnet.onnx", remove_blocks=1,
                             calib=ROOT / "models" / "digits_calib.npz", calib_samples=64,
                             finetune=_quick(epochs=1, augment=False))
    assert result.removed_blocks and result.finetune is not None and result.analysis is None
    x = np.load(ROOT / "models" / "digits_test.npz")["input"][:64]
    dense = _outputs(ROOT / "models" / "digits_resnet.onnx", x)
    tuned = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    # the student was trained against the dense model: its held-out loss at epoch 0 is the depth-pruned model's
    assert result.finetune.before.heldout_loss > 0
    assert tuned.run(None, {"input": x})[0].shape == dense.shape


def test_report_warns_when_the_kept_epoch_agrees_less_than_the_start():
    from onnxprune.finetune.train import EpochRecord, FinetuneReport

    def report(best, agreements, accuracy=None):
        r = FinetuneReport(230, 26, 1000, "cpu", True, [], best_epoch=best)
        r.epochs = [EpochRecord(i, None, 1.0 - 0.1 * i, a, None, accuracy, 1.0) for i, a in enumerate(agreements)]
        return r

    fell = report(2, [1.0, 0.96, 0.92])  # digits_resnet at 0.7, distilled on 256 images: the loss fell, so did this
    assert "agreement with the dense model on the held-out inputs fell 1.000 -> 0.920" in fell.warnings[0]
    assert fell.to_dict()["warnings"] == fell.warnings
    assert report(2, [0.92, 0.96, 0.96]).warnings == []  # rose
    assert report(0, [1.0, 0.9, 0.9]).warnings == []  # kept the start
    assert report(2, [1.0, 0.9, 0.9], accuracy=0.9).warnings == []  # labels: accuracy picked it
