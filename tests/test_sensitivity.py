"""`onnxprune sensitivity`: each group narrowed alone, in process and as local Ray tasks; an interrupted run keeps
what finished; prune --latency-target reads the result in place of channel scores."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.cli import main
from onnxprune.errors import OptionError
from onnxprune.executors import InProcessExecutor, make_executor
from onnxprune.latency import Deployment
from onnxprune.latency_target import prune_to_latency
from onnxprune.sensitivity import load_sensitivity, loss_table, sensitivity
from onnxprune.session import open_session

MODELS = Path(__file__).resolve().parents[1] / "models"
DIGITS = MODELS / "digits_cnn.onnx"
TEST_X = MODELS / "digits_test.npz"
TEST_Y = MODELS / "digits_test_labels.npy"


def test_sensitivity_in_process_with_labels(tmp_path):
    labels = np.load(TEST_Y)[:64]
    report = sensitivity(str(DIGITS), str(TEST_X), tmp_path, labels=labels, ratios=(0.5, 0.75), round_to=8,
                         calib_samples=64, deployment=None)
    assert report.complete and report.dense_accuracy > 0.9
    groups = {p.group for p in report.points}
    assert len(groups) == 4 and len(report.points) == 8
    for p in report.points:
        assert p.kept % 8 == 0 and p.kept < p.channels and 0 <= p.accuracy <= 1 and p.rel_error >= 0
        assert p.saved_ms is None
    # the numbers are what verify would say: rebuild one point and compare
    data = json.loads((tmp_path / "sensitivity.json").read_text())
    assert data["complete"] and len(data["points"]) == 8
    assert "| group |" in (tmp_path / "sensitivity.md").read_text()
    by_width = {}
    for p in report.points:
        by_width.setdefault(p.group, {})[p.kept] = p.rel_error
    assert all(errs[min(errs)] >= errs[max(errs)] - 0.05 for errs in by_width.values())  # narrower: more error


class _StopAfter(InProcessExecutor):
    def __init__(self, n):
        self.n = n

    def map(self, fn, jobs, context=None):
        for i, item in enumerate(super().map(fn, jobs, context)):
            if i == self.n:
                raise KeyboardInterrupt
            yield item


def test_an_interrupted_run_keeps_the_finished_tasks(tmp_path):
    kwargs = dict(ratios=(0.5,), round_to=8, calib_samples=16, deployment=None)
    with pytest.raises(KeyboardInterrupt):
        sensitivity(str(DIGITS), str(TEST_X), tmp_path, executor=_StopAfter(2), **kwargs)
    data = json.loads((tmp_path / "sensitivity.json").read_text())
    assert not data["complete"] and len(data["points"]) == 2
    with pytest.raises(OptionError, match="did not finish"):
        load_sensitivity(tmp_path / "sensitivity.json")
    said = []
    ran = []

    class Counting(InProcessExecutor):
        def map(self, fn, jobs, context=None):
            jobs = list(jobs)
            ran.extend(jobs)
            return super().map(fn, jobs, context)

    report = sensitivity(str(DIGITS), str(TEST_X), tmp_path, executor=Counting(), say=said.append, **kwargs)
    assert report.complete and len(report.points) == 4 and len(ran) == 2
    assert any("resuming: 2 of 4" in s for s in said)


def test_sensitivity_on_local_ray(tmp_path):
    pytest.importorskip("ray")
    executor = make_executor("ray", num_cpus=2)
    try:
        report = sensitivity(str(DIGITS), str(TEST_X), tmp_path, ratios=(0.5,), round_to=8, calib_samples=16,
                             deployment=None, executor=executor)
    finally:
        executor.close()
    local = sensitivity(str(DIGITS), str(TEST_X), tmp_path / "local", ratios=(0.5,), round_to=8, calib_samples=16,
                        deployment=None)
    ray_points = {(p.group, p.kept): p.rel_error for p in report.points}
    assert ray_points == pytest.approx({(p.group, p.kept): p.rel_error for p in local.points})
    import ray

    assert not ray.is_initialized()


def test_the_executor_option_errors():
    with pytest.raises(OptionError, match="--ray-address is for --executor ray"):
        make_executor("inprocess", "ray://nowhere:10001")
    with pytest.raises(OptionError):
        make_executor("threads")


def test_prune_to_latency_reads_the_sensitivity_file(tmp_path):
    sensitivity(str(DIGITS), str(TEST_X), tmp_path, ratios=(0.25, 0.5, 0.75), round_to=8, calib_samples=16,
                deployment=Deployment(), budget_s=0, cache_dir=tmp_path / "cache")
    data = load_sensitivity(tmp_path / "sensitivity.json")
    model = onnx.load(str(DIGITS))
    table = loss_table(data, 0, [8, 16, 24, 32], model)
    assert table[-1] == 0.0 and all(a >= b for a, b in zip(table, table[1:]))
    other = onnx.load(str(MODELS / "digits_resnet.onnx"))
    with pytest.raises(OptionError, match="another model"):
        loss_table(data, 0, [8, 16], other)
    result = prune_to_latency(str(DIGITS), 0.7, Deployment(), sensitivity=data, round_to=8,
                              cache_dir=tmp_path / "cache", max_steps=1, check_rounds=2, groups_checked=0)
    assert result.latency.importance.startswith("sensitivity")
    assert result.latency.steps and any(g.kept < g.channels for g in result.report.groups)
    session = open_session(result.model)
    assert session.run(None, {"input": np.zeros((1, 1, 28, 28), np.float32)})[0].shape == (1, 10)


def test_cli_sensitivity(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        main(["sensitivity", str(DIGITS), "--calib", str(TEST_X), "--calib-samples", "16", "--out",
              str(tmp_path / "new" / "sens"), "--ratios", "0.5", "--round-to", "8", "--no-latency", "--json"])
    finally:
        os.umask(old)
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["complete"] and len(data["points"]) == 4 and "sensitivity: 4/4 tasks" in captured.err
    for name in ("sensitivity.json", "sensitivity.md"):  # what the umask gives a new file, not 0600
        assert (tmp_path / "new" / "sens" / name).stat().st_mode & 0o777 == 0o644


def test_labels_follow_the_calibration_cap(tmp_path):
    """--calib-samples keeps the first N samples of --calib: the labels of all of them are cut alike, with a note;
    labels that fit neither count name --calib-samples."""
    from cli_run import assert_error, run

    args = ["sensitivity", DIGITS, "--calib", TEST_X, "--calib-samples", "16", "--out", tmp_path, "--ratios", "0.5",
            "--round-to", "8", "--no-latency", "--labels"]
    result = run(*args, TEST_Y)  # 1000 labels for the 1000 samples, of which 16 are used
    assert result.exit_code == 0, result.stderr
    assert "note: --labels: the first 16 of 1000 labels, for the first 16 samples that --calib-samples keeps" \
        in result.stdout
    assert json.loads((tmp_path / "sensitivity.json").read_text())["dense_accuracy"] is not None
    np.save(tmp_path / "short.npy", np.load(TEST_Y)[:999])
    assert_error(run(*args, tmp_path / "short.npy"), 1,
                 "--labels holds 999 labels for 1000 samples (--calib-samples keeps the first 16)")
