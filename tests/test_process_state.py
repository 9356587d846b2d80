"""The library leaves the process as it found it: the working folder, the loggers' severities, no files written."""

import logging
import os
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
import onnxruntime
import pytest
from onnx import TensorProto, helper

import onnxprune.api
import onnxprune.graph
import onnxprune.shapes

MODELS = Path(__file__).resolve().parent.parent / "models"
SYMBOLIC_LOGGER = "onnxruntime.tools.symbolic_shape_infer"


@pytest.fixture
def watched(tmp_path, monkeypatch):
    """An empty working folder, and a record of every call that would change process-wide state, and of the
    calls into the two inferences that used to change it (so that a test knows it went through them)."""
    calls = {"set_default_logger_severity": 0, "chdir": 0, "fold": 0, "symbolic": 0}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def severity_set(*_):
        calls["set_default_logger_severity"] += 1

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(onnxruntime, "set_default_logger_severity", severity_set)
    monkeypatch.setattr(os, "chdir", counted("chdir", os.chdir))  # even a change undone is not thread-safe
    monkeypatch.setattr(onnxprune.shapes, "_fold_shape_arithmetic", counted("fold", onnxprune.shapes._fold_shape_arithmetic))
    monkeypatch.setattr(onnxprune.shapes, "symbolic_shapes", counted("symbolic", onnxprune.shapes.symbolic_shapes))
    monkeypatch.setattr(onnxprune.graph, "symbolic_shapes", counted("symbolic", onnxprune.graph.symbolic_shapes))
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.INFO  # a value the library would not pick
    logging.getLogger(SYMBOLIC_LOGGER).setLevel(logging.DEBUG)
    yield cwd, calls
    logging.getLogger(SYMBOLIC_LOGGER).setLevel(logging.NOTSET)


def _assert_untouched(cwd, calls):
    assert os.getcwd() == str(cwd)
    assert list(cwd.iterdir()) == []
    assert calls["set_default_logger_severity"] == 0 and calls["chdir"] == 0
    assert gs.logger.G_LOGGER.severity == gs.logger.G_LOGGER.INFO
    assert logging.getLogger(SYMBOLIC_LOGGER).level == logging.DEBUG


def test_analyze_and_prune_leave_the_process_as_they_found_it(watched, tmp_path):
    cwd, calls = watched
    model = onnx.load(str(MODELS / "tx_gpt2_ts.onnx"))
    report = onnxprune.api.analyze(model)
    assert report.groups
    result = onnxprune.api.prune(model, ratio=0.25)
    assert result.model.graph.node
    assert calls["fold"] > 0 and calls["symbolic"] > 0  # both inferences ran, and neither left a trace
    _assert_untouched(cwd, calls)


def test_an_incomplete_symbolic_inference_writes_nothing_into_the_working_folder(watched):
    cwd, calls = watched
    graph = helper.make_graph(
        [helper.make_node("Foo", ["x"], ["y"], domain="custom.domain"), helper.make_node("Relu", ["y"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.domain", 1)])
    info = onnxprune.shapes.symbolic_shapes(model, {})  # onnxruntime's own entry point would save a debug model here
    assert info.tensors == {}
    assert calls["symbolic"] == 1
    _assert_untouched(cwd, calls)
