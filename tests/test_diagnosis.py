"""Why a speedup falls short of its MACs: the rule on measured numbers (H200 and CPU), and bench measuring them."""

import json

import onnx
import pytest

from models import zoo
from onnxprune.bench import BenchConfig, bench, format_markdown, format_table
from onnxprune.diagnosis import Evidence, diagnose, gather
from cli_run import run

# onnxruntime-gpu 1.31.1 on an NVIDIA H200, CUDA provider, dense -> pruned (--ratio 0.5) latency in ms
H200 = {  # model: (MAC ratio, b1 dense, b1 pruned, b8 dense, b8 pruned, b1 dense with a CUDA graph)
    "resnet50": (0.257, 1.39, 1.26, 2.05, 1.38, 0.91),
    "bert_base": (0.50, 2.01, 2.12, 2.50, 1.94, 1.24),
}


@pytest.mark.parametrize("name", sorted(H200))
def test_h200_batch_1_is_launch_bound(name):
    macs, b1, p1, b8, p8, graph = H200[name]
    e = Evidence("cuda", 1, macs, b1 / p1, batch_gain=(b1 / 1) / (b8 / 8), graph_gain=b1 / graph)
    text = diagnose(e)
    assert text and "launch-bound at batch 1 on this GPU" in text
    assert "width pruning does not remove" in text and "--depth-ratio" in text and "--cuda-graph" in text
    assert "a CUDA graph alone runs the dense model" in text
    # either sign alone is enough
    assert "launch-bound" in diagnose(Evidence("cuda", 1, macs, b1 / p1, batch_gain=(b1 / 1) / (b8 / 8)))
    assert "launch-bound" in diagnose(Evidence("cuda", 1, macs, b1 / p1, graph_gain=b1 / graph))
    # already with graphs: --cuda-graph is not suggested again
    assert "--cuda-graph" not in diagnose(Evidence("cuda", 1, macs, b1 / p1, batch_gain=5.0, cuda_graph=True))


def test_h200_resnet50_batch_8_short_but_not_launch_bound():
    macs, _, _, b8, p8, _ = H200["resnet50"]
    text = diagnose(Evidence("cuda", 8, macs, b8 / p8, batch_gain=1.2, graph_gain=2.05 / 1.77))
    assert text and "launch-bound at" not in text and "--layers" in text and "(not launch-bound: " in text


@pytest.mark.parametrize("speedup, macs", [(3.6, 0.27), (3.8, 0.27), (1.8, 0.5), (1.0, 1.0), (0.97, 1.0)])
def test_cpu_efficiency_near_one_is_not_diagnosed(speedup, macs):
    # ResNet-18 on 2 CPU cores: 3.6-3.8x for MACs x0.27 (efficiency ~0.97-1.0); unstructured: MACs unchanged
    assert diagnose(Evidence("cpu", 1, macs, speedup, batch_gain=1.05, kernels=40, kernel_us=200.0)) is None
    assert diagnose(Evidence("cpu", 1, macs, speedup * 0.9, batch_gain=1.05)) is None  # efficiency ~0.9


def test_cpu_short_speedup_from_misalignment_points_to_layers():
    text = diagnose(Evidence("cpu", 1, 0.30, 1.7, batch_gain=1.1, kernels=60, kernel_us=300.0))
    assert "launch-bound at" not in text and "--round-to" in text
    # tiny kernels on the CPU count only where batch scaling was not measured
    assert "launch-bound" in diagnose(Evidence("cpu", 1, 0.30, 1.1, kernels=34, kernel_us=1.0))
    assert "launch-bound at" not in diagnose(Evidence("cpu", 1, 0.30, 1.1, batch_gain=1.1, kernels=34, kernel_us=1.0))
    assert "launch-bound at" not in diagnose(Evidence("cpu", 1, 0.30, 1.1, kernels=34, kernel_us=12.0))


@pytest.fixture
def tiny(tmp_path):
    from onnxprune import prune

    dense, pruned = tmp_path / "tiny.onnx", tmp_path / "tiny_p.onnx"
    onnx.save(zoo.resnet18(width=8, image=16, num_classes=10), dense)
    prune(str(dense), ratio=0.5, round_to=1).save(pruned)
    return dense, pruned


FAST = dict(warmup=2, runs=3, rounds=3, pause_s=0.0, visit_ms=2.0)


def test_gather_measures_batch_scaling_and_kernels(tiny, monkeypatch):
    report = bench([str(p) for p in tiny], BenchConfig(batches=(1,), **FAST))
    row = report.rows[1]
    row.speedup = 0.3 / row.mac_ratio  # pin a short efficiency (0.3): the rule, not this machine's timing, decides
    diagnoses = gather(report, str(tiny[0]))
    assert len(diagnoses) == 1
    e = diagnoses[0].evidence
    assert e.batch_gain is not None and e.batch_gain > 0  # a probe at batch 1 and 8
    assert e.kernels and e.kernels > 10 and e.kernel_us > 0  # the profiler's nodes of the dense model
    assert diagnoses[0].model == "tiny_p.onnx" and diagnoses[0].text == diagnose(e)
    report.diagnoses = diagnoses
    assert f"Diagnosis, tiny_p.onnx: {diagnoses[0].text}." in format_table(report)
    assert "Diagnosis, tiny_p.onnx" in format_markdown(report)
    assert json.loads(json.dumps(report.to_dict()))["diagnoses"][0]["evidence"]["kernels"] == e.kernels


def test_gather_uses_the_reports_own_batches_and_skips_efficient_rows(tiny, monkeypatch):
    report = bench([str(p) for p in tiny], BenchConfig(batches=(1, 8), **FAST))
    for r in report.rows:
        r.speedup = (0.3 if r is report.rows[1] else 1.0) / r.mac_ratio  # only batch 1's pruned row falls short
    import onnxprune.diagnosis as diag

    probes = []
    monkeypatch.setattr("onnxprune.bench.bench", lambda *a, **k: probes.append(a) or pytest.fail("probed"))
    found = diag.gather(report, str(tiny[0]))
    assert not probes and [d.batch for d in found] == [1]
    dense = {r.batch: r.median_ms for r in report.rows if r.model == "tiny.onnx"}
    assert found[0].evidence.batch_gain == pytest.approx(dense[1] / (dense[8] / 8))
    for r in report.rows:
        r.speedup = 1.0 / r.mac_ratio  # efficiency 1: nothing to diagnose
    assert diag.gather(report, str(tiny[0])) == []


def test_cli_diagnoses_and_no_diagnose(tiny):
    args = ["bench", str(tiny[0]), str(tiny[1]), "--warmup", "2", "--runs", "2", "--rounds", "3", "--visit-ms", "1"]
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert "diagnoses" in data
    for d in data["diagnoses"]:  # only rows far short of their MACs, each with its evidence
        assert d["evidence"]["efficiency"] < 0.6 and d["text"]
    r = run(*args, "--json", "--no-diagnose")
    assert r.exit_code == 0 and json.loads(r.stdout)["diagnoses"] == []
