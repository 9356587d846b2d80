"""--exclude / exclude=: a pattern that matches nothing says so; None and a single string are accepted."""

from __future__ import annotations

import json
import warnings

import onnx
import pytest

import onnxprune
from onnxprune import OnnxPruneWarning
from onnxprune.unstructured import prune_unstructured

from graphs import Builder
from cli_run import run


def exported_names() -> onnx.ModelProto:
    """A CNN whose nodes are named the way torch.onnx names them: by module path."""
    b = Builder()
    x = b.input("input", ["N", 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 16, name="/features/features.0/Conv")], name="/features/features.1/Relu")
    y = b.op("Relu", [b.conv(y, 16, 16, name="/features/features.2/Conv")], name="/features/features.3/Relu")
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y], name="/pool/GlobalAveragePool")], name="/Flatten")
    y = b.op("Relu", [b.gemm(y, 16, 32, name="/head/head.0/Gemm")], name="/head/head.1/Relu")
    b.output(b.gemm(y, 32, 10, name="/head/head.2/Gemm"))
    return b.build()


def test_a_pattern_that_matches_nothing_warns():
    with pytest.warns(OnnxPruneWarning, match="'head.\\*' matches no node") as caught:
        result = onnxprune.prune(exported_names(), exclude=["head.*"], round_to=1)
    assert "'*head.*' would match '/head/head.0/Gemm'" in str(caught[0].message)
    assert str(caught[0].message).startswith("exclude 'head.*' matches")  # the parameter; the CLI says the option
    assert result.report.warnings == [str(caught[0].message)]
    assert result.report.to_dict()["warnings"] == result.report.warnings
    assert all(g.note == "" for g in result.report.groups)  # nothing was excluded


def test_a_pattern_that_matches_is_quiet_and_excludes():
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxPruneWarning)
        result = onnxprune.prune(exported_names(), exclude=["/head/*"], round_to=1)
    assert result.report.warnings == []
    hidden = [g for g in result.report.groups if "/head/head.0/Gemm" in g.members and g.channels == 32][0]
    assert hidden.kept == 32 and hidden.note == "excluded by /head/*"


def test_exclude_none_and_a_single_string_are_accepted():
    assert onnxprune.prune(exported_names(), exclude=None, round_to=1).report.options["exclude"] == []
    one = onnxprune.prune(exported_names(), exclude="/head/*", round_to=1)
    assert one.report.options["exclude"] == ["/head/*"] and one.report.warnings == []


def test_cli_prints_a_warning_line(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(exported_names(), str(path))
    result = run("prune", path, "-o", tmp_path / "out.onnx", "--exclude", "nomatch*", "--round-to", "1")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "'nomatch*' matches no node" in lines[0]
    quiet = run("prune", path, "-o", tmp_path / "out2.onnx", "--exclude", "/head/*", "--round-to", "1")
    assert quiet.exit_code == 0 and "warning:" not in quiet.stderr
    data = run("prune", path, "-o", tmp_path / "out3.onnx", "--exclude", "nomatch*", "--json")
    assert "warning: --exclude 'nomatch*'" in data.stderr
    assert json.loads(data.stdout)["warnings"][0].startswith("--exclude 'nomatch*' matches no node")


def test_unstructured_warns_too(tmp_path):
    _, report = prune_unstructured(exported_names(), 0.5, exclude=["nomatch*"])
    assert len(report.warnings) == 1 and report.warnings[0].startswith("exclude 'nomatch*' matches no weight layer")
    assert report.to_dict()["warnings"] == report.warnings
    path = tmp_path / "m.onnx"
    onnx.save(exported_names(), str(path))
    result = run("prune", path, "-o", tmp_path / "o.onnx", "--unstructured", "--sparsity", "0.5", "--exclude", "x*")
    assert result.exit_code == 0 and "warning: --exclude 'x*' matches no weight layer" in result.stderr
