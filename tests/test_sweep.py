"""onnxprune sweep: both methods at every ratio, one interleaved benchmark, JSON + Markdown (+ PNG)."""

import json
import sys

import onnx
import pytest
from click.testing import CliRunner

from models import zoo
from onnxprune.bench import BenchConfig
from onnxprune.cli import cli
from onnxprune.errors import OptionError
from onnxprune.sweep import parse_ratios, sweep


@pytest.fixture()
def model_path(tmp_path):
    path = tmp_path / "vgg.onnx"
    onnx.save(zoo.EXAMPLES["vgg"](), str(path))
    return str(path)


def test_sweep_measures_both_methods(model_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot is optional: the table must not need it
    steps = []
    report = sweep(model_path, [0.3, 0.6], str(tmp_path / "out"), round_to=1,
                   config=BenchConfig(rounds=1, runs=1, warmup=0), progress=steps.append)
    assert len(steps) == 5  # 2 ratios x 2 methods + the benchmark
    by = {(p.method, p.ratio): p for p in report.points}
    assert set(by) == {(m, r) for m in ("structured", "unstructured") for r in (0.3, 0.6)}
    for ratio in (0.3, 0.6):
        s, u = by[("structured", ratio)], by[("unstructured", ratio)]
        assert s.mac_ratio < 1.0 and u.mac_ratio == 1.0  # zeros keep every MAC
        assert s.params < u.params
        assert s.median_ms is not None and u.median_ms is not None and s.cosine is not None
        assert u.verdict in ("faster", "slower", "within noise")
    assert by[("structured", 0.6)].macs < by[("structured", 0.3)].macs
    data = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert len(data["points"]) == 4 and "plot" not in data["files"]
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "| structured | 0.3 |" in md and "| verdict |" in md and "are noise" in md


def test_sweep_cli(model_path, tmp_path):
    result = CliRunner().invoke(cli, ["sweep", model_path, "--ratios", "0.5", "--out", str(tmp_path / "o"),
                                      "--rounds", "1", "--runs", "1", "--round-to", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["method"] for p in data["points"]] == ["structured", "unstructured"]
    # no terminal: one line per step instead of a bar that would show only its label
    assert "sweep: 1/3 structured 0.5\nsweep: 2/3 unstructured 0.5\nsweep: 3/3 benchmark" in result.stderr


@pytest.mark.parametrize("text", ["", "0.5,x", "0,0.5", "1.0", "-0.2"])
def test_bad_ratios(text):
    with pytest.raises(OptionError):
        parse_ratios(text)
