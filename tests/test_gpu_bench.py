"""benchmarks/gpu.py on the CPU with tiny models: every step it can run on the CPU is measured and written."""

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from onnxprune import api

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.py"
HAS_DEPTH = "depth_ratio" in inspect.signature(api.prune).parameters


def run(*args, check=True):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_python_without_the_dependencies_gets_one_line_saying_how_to_run_it(tmp_path):
    # -I -S: no site-packages, as a bare system python3 has none of the project's dependencies
    proc = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), tmp_path, "--cpu", "--small"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "has no module 'onnx'" in proc.stderr
    assert "make bench-gpu PYTHON=.venv/bin/python" in proc.stderr


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_cpu_small_run_writes_every_row(tmp_path):
    proc = run(tmp_path, "--cpu", "--small")
    assert "done:" in proc.stdout
    data = json.loads((tmp_path / "gpu.json").read_text())
    md = (tmp_path / "gpu.md").read_text()
    assert data["provider"] == "cpu" and data["small"] is True
    ids = [s["id"] for s in data["steps"]]
    for expected in ("resnet50-fp32", "bert_base-fp32", "resnet50-graph", "bert_base-graph", "resnet50-fp16",
                     "bert_base-fp16", "resnet50-fp16-graph", "bert_base-fp16-graph", "resnet50-unstructured",
                     "bert_base-unstructured", "resnet50-fp16-align", "resnet50-depth", "bert_base-depth",
                     "resnet18-fp32", "mobilenet_v2-fp32"):
        assert expected in ids
    assert ids[:2] == ["resnet50-fp32", "bert_base-fp32"]  # the float32 table first
    for step in data["steps"]:
        if step["cuda_graph"]:
            assert step["status"] == "skipped" and "CUDA" in step["note"]
            continue
        if step["id"].endswith("-depth") and not HAS_DEPTH:
            assert step["status"] == "skipped" and "depth_ratio" in step["note"]
            continue
        assert step["status"] == "done", step
        assert step["id"] in md
        for batch in step["batches"]:
            rows = [r for r in step["rows"] if r["batch"] == batch]
            # every variant, then the control row
            assert [r["control"] for r in rows] == [False] * len(step["variants"]) + [True]
            for r in rows:
                assert r["status"] == "ok" and r["provider"] == "cpu"
                for key in ("median_ms", "p10_ms", "p90_ms", "throughput", "speedup", "mac_ratio", "efficiency"):
                    assert _finite(r[key]), (step["id"], batch, r["model"], key, r[key])
                assert r["runs"] >= 6
                if step["fp16"]:
                    assert "cosine to float32" in r["note"]
                    assert float(r["note"].split("float32 ")[1].rstrip(")")) >= 0.99
            structured = [r for r in rows if r["model"].endswith(("_s50.onnx", "_a16.onnx"))]
            assert all(r["mac_ratio"] < 0.9 for r in structured)
            assert all(r["mac_ratio"] == 1.0 for r in rows if "_u" in r["model"])
    assert data["preparation"]["resnet50/s50"]["mac_ratio"] < 0.9
    assert data["preparation"]["resnet50/s50.fp16"]["cosine"] >= 0.99
    # a rerun reuses the cached models (float16 copies included) and still knows their check
    again = run(tmp_path, "--cpu", "--small", "--only", "resnet50-fp16")
    assert "prepared" not in again.stdout
    step = json.loads((tmp_path / "gpu.json").read_text())["steps"][0]
    assert step["status"] == "done" and all("cosine to float32" in r["note"] for r in step["rows"])
    assert isinstance(data["diagnoses"], list)


def test_budget_skips_with_a_note_and_still_writes(tmp_path):
    run(tmp_path, "--cpu", "--small", "--budget-s", "0")
    data = json.loads((tmp_path / "gpu.json").read_text())
    assert {s["status"] for s in data["steps"]} == {"skipped"}
    assert all(s["note"] for s in data["steps"])
    assert "Not measured" in (tmp_path / "gpu.md").read_text()


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_without_cuda_one_line_error(tmp_path):
    proc = run(tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--cpu" in proc.stderr


def _gpu_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_diagnoses_from_the_runs_own_numbers():
    # the H200 ResNet-50 numbers (ms): fp32 b1 1.39 -> 1.26, b8 2.05 -> 1.38; with a CUDA graph b1 0.91 -> 0.69
    from onnxprune.bench import BenchRow

    gpu = _gpu_module()

    def rows(times):
        out = []
        for batch, (dense, pruned) in times.items():
            out += [BenchRow("r50.onnx", "", "cuda", 1, batch, median_ms=dense, speedup=1.0, mac_ratio=1.0),
                    BenchRow("r50_s50.onnx", "", "cuda", 1, batch, median_ms=pruned, speedup=dense / pruned,
                             mac_ratio=0.257),
                    BenchRow("r50.onnx (control)", "", "cuda", 1, batch, control=True, median_ms=dense, speedup=1.0,
                             mac_ratio=1.0)]
        return out

    fp32 = gpu.Step("resnet50-fp32", "", "resnet50", ["dense", "s50"], [1, 8], status="done",
                    rows=rows({1: (1.39, 1.26), 8: (2.05, 1.38)}))
    graph = gpu.Step("resnet50-graph", "", "resnet50", ["dense", "s50"], [1], cuda_graph=True, status="done",
                     rows=rows({1: (0.91, 0.69)}))
    found = gpu.diagnoses([fp32, graph])
    b1 = next(d for d in found if d["batch"] == 1)
    assert "launch-bound at batch 1 on this GPU" in b1["text"]
    assert b1["evidence"]["graph_gain"] == pytest.approx(1.39 / 0.91)
    assert b1["evidence"]["batch_gain"] == pytest.approx(1.39 / (2.05 / 8))
    assert all("launch-bound at" not in d["text"] for d in found if d["batch"] == 8)  # no batch 64 to scale to
