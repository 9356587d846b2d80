"""bench: the structure of the report (never timing values), providers, shapes, formatters and the command."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxprune import bench as bench_mod
from onnxprune.bench import (
    BenchConfig,
    BenchReport,
    BenchRow,
    bench,
    format_markdown,
    format_table,
    interleave,
    shapes_for_batch,
    speedup_interval,
)
from cli_run import run
from onnxprune.errors import OnnxPruneError, OptionError

FAST = dict(warmup=1, runs=2, rounds=2, pause_s=0.0, visit_ms=0.0)


def conv_net(width: int, batch="N") -> onnx.ModelProto:
    """x[batch, 3, 8, 8] -Conv(width, 3x3, pad 1)-Relu-Conv(4, 1x1)-> y[batch, 4, 8, 8]."""
    rng = np.random.default_rng(0)
    graph = h.make_graph(
        [
            h.make_node("Conv", ["x", "W1"], ["a"], pads=[1, 1, 1, 1]),
            h.make_node("Relu", ["a"], ["r"]),
            h.make_node("Conv", ["r", "W2"], ["y"]),
        ],
        "net",
        [h.make_tensor_value_info("x", T.FLOAT, [batch, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [batch, 4, 8, 8])],
        [
            nh.from_array(rng.standard_normal((width, 3, 3, 3)).astype(np.float32), "W1"),
            nh.from_array(rng.standard_normal((4, width, 1, 1)).astype(np.float32), "W2"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


def macs(width: int, batch: int) -> int:
    return batch * width * 64 * 27 + batch * 4 * 64 * width


@pytest.fixture
def two(tmp_path):
    dense, pruned = tmp_path / "dense.onnx", tmp_path / "pruned.onnx"
    onnx.save(conv_net(16), dense)
    onnx.save(conv_net(8), pruned)
    return dense, pruned


def test_rows_include_control_and_ratios(two):
    dense, pruned = two
    report = bench([dense, pruned], BenchConfig(batches=(1, 2), threads=(1,), **FAST))
    assert [(r.model, r.batch, r.control) for r in report.rows] == [
        ("dense.onnx", 1, False), ("pruned.onnx", 1, False), ("dense.onnx (control)", 1, True),
        ("dense.onnx", 2, False), ("pruned.onnx", 2, False), ("dense.onnx (control)", 2, True),
    ]
    for r in report.rows:
        assert r.status == "ok" and r.provider == "cpu" and r.threads == 1
        assert r.runs == FAST["runs"] * FAST["rounds"]
        assert r.median_ms > 0 and r.p10_ms <= r.median_ms <= r.p90_ms
        assert r.throughput == pytest.approx(r.batch * 1000 / r.median_ms)
    base, small, control = report.rows[3:6]
    assert base.speedup == 1.0 and base.efficiency == 1.0
    assert base.macs == macs(16, 2) and small.macs == macs(8, 2) and control.macs == base.macs
    assert small.mac_ratio == pytest.approx(0.5)
    assert small.efficiency == pytest.approx(small.speedup * 0.5)
    assert control.mac_ratio == 1.0
    for r in report.rows:  # two rounds: an interval exists and holds the point estimate's neighbourhood
        assert r.speedup_low <= r.speedup_high
    assert base.speedup_low == base.speedup_high == 1.0
    d = report.to_dict()
    json.loads(json.dumps(d))
    assert len(d["rows"]) == 6 and d["groups"][0]["noise"] >= bench_mod.NOISE_FLOOR
    assert d["environment"]["onnxruntime"] == ort.__version__
    assert "shuffled rounds" in d["method"]


def test_session_options_follow_benchmarking_md():
    so = bench_mod.session_options(2)
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_interleave_blocks_warmup_and_shuffle():
    calls = []
    runners = [lambda i=i: calls.append(i) for i in range(3)]
    ticks = iter(range(0, 10**9, 1000))
    times = interleave(runners, warmup=2, runs=3, rounds=4, untimed_per_visit=2, pause_s=0, visit_warm_s=0, seed=1,
                       clock=lambda: next(ticks))
    assert [len(t) for t in times] == [12, 12, 12]
    assert calls[:6] == [0, 0, 1, 1, 2, 2]  # warm-up, never timed
    visits = calls[6:]
    blocks = [visits[k:k + 5] for k in range(0, len(visits), 5)]  # 2 untimed + 3 timed per visit
    assert all(len(set(b)) == 1 for b in blocks)
    rounds = [[b[0] for b in blocks[k:k + 3]] for k in range(0, 12, 3)]
    assert all(sorted(r) == [0, 1, 2] for r in rounds)  # every round visits every model once
    assert len({tuple(r) for r in rounds}) > 1  # in a shuffled order


def test_fast_models_get_more_untimed_runs_per_visit():
    calls = []
    runners = [lambda i=i: calls.append(i) for i in range(2)]
    ticks = iter(range(0, 10**12, 2_000_000))  # every run "takes" 2 ms
    interleave(runners, warmup=3, runs=2, rounds=1, untimed_per_visit=2, pause_s=0, visit_warm_s=0.01, seed=0,
               clock=lambda: next(ticks))
    visits = calls[6:]
    assert len(visits) == 2 * (5 + 2)  # 10 ms of untimed runs (5 x 2 ms) then 2 timed, per visit


def test_unavailable_cuda_is_reported(two, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    report = bench(list(two), BenchConfig(providers=("cpu", "cuda"), **FAST))
    cuda = [r for r in report.rows if r.provider == "cuda"]
    assert len(cuda) == 3 and all(r.status == "unavailable" and r.median_ms is None for r in cuda)
    assert "CUDAExecutionProvider" in cuda[0].note
    assert cuda[1].mac_ratio == pytest.approx(0.5)
    assert [r.status for r in report.rows if r.provider == "cpu"] == ["ok"] * 3
    assert "unavailable" in format_table(report) and "unavailable" in format_markdown(report)
    assert json.loads(json.dumps(report.to_dict()))["rows"][3]["status"] == "unavailable"


def test_require_provider_raises(two, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(OnnxPruneError, match="--provider tensorrt.*not available"):
        bench(list(two), BenchConfig(providers=("tensorrt",), require_provider=True, **FAST))


def test_provider_fallback_is_unavailable(two, monkeypatch):
    # onnxruntime claims CUDA, but the session falls back to the CPU (a GPU build without a GPU)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(bench_mod, "provider_list", lambda provider, trt_sparsity=False, cuda_graph=False: ["CPUExecutionProvider"])
    report = bench(list(two), BenchConfig(providers=("cuda",), **FAST))
    assert all(r.status == "unavailable" and "fell back" in r.note for r in report.rows)
    with pytest.raises(OnnxPruneError, match="fell back"):
        bench(list(two), BenchConfig(providers=("cuda",), require_provider=True, **FAST))


def test_trt_provider_options():
    trt = bench_mod.provider_list("tensorrt", trt_sparsity=True)
    assert trt[0] == ("TensorrtExecutionProvider", {"trt_sparsity_enable": True})
    assert trt[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert bench_mod.provider_list("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_iobinding_runner_on_cpu():
    # the GPU path (inputs bound once, outputs bound on the device, synchronize) exercised on the CPU device
    sess = ort.InferenceSession(conv_net(4).SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones((2, 3, 8, 8), np.float32)}
    runner = bench_mod._Runner(sess, feeds, "cpu", use_iobinding=True)
    runner()
    runner()
    (out,) = runner.binding.copy_outputs_to_cpu()
    np.testing.assert_allclose(out, sess.run(None, feeds)[0], rtol=1e-6)


def test_fixed_output_runner_on_cpu():
    # the CUDA-graph path: outputs preallocated once (shapes from a first run) and written in place by every run
    sess = ort.InferenceSession(conv_net(4).SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    runner = bench_mod._Runner(sess, feeds, "cpu", fixed_outputs=True)
    bound = runner._values[-1]
    runner()
    (out,) = runner.binding.get_outputs()
    assert out.data_ptr() == bound.data_ptr()
    np.testing.assert_allclose(bound.numpy(), sess.run(None, feeds)[0], rtol=1e-6)


def test_cuda_graph_options():
    assert bench_mod.provider_list("cuda", cuda_graph=True) == [
        ("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"]
    for providers in (("cpu",), ("cuda", "cpu"), ("tensorrt",)):
        with pytest.raises(OptionError, match="cuda_graph needs provider cuda"):
            BenchConfig(providers=providers, cuda_graph=True).validate()
    BenchConfig(providers=("cuda",), cuda_graph=True).validate()


def test_cuda_graph_opens_fresh_sessions_per_batch(two, monkeypatch):
    # the CUDA path run on the CPU provider: a graph is captured at one shape, so every batch gets new sessions,
    # each with preallocated outputs
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setitem(bench_mod.PROVIDERS, "cuda", "CPUExecutionProvider")
    monkeypatch.setitem(bench_mod.DEVICE_OF, "cuda", "cpu")
    asked, opened, fixed = [], [], []
    monkeypatch.setattr(bench_mod, "provider_list", lambda provider, trt_sparsity=False, cuda_graph=False:
                        asked.append(cuda_graph) or ["CPUExecutionProvider"])
    real_open, real_runner = bench_mod.open_session, bench_mod._Runner
    monkeypatch.setattr(bench_mod, "open_session", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    monkeypatch.setattr(bench_mod, "_Runner", lambda *a, **k: fixed.append(k["fixed_outputs"]) or real_runner(*a, **k))
    report = bench(list(two), BenchConfig(providers=("cuda",), batches=(1, 2), cuda_graph=True, **FAST))
    assert len(opened) == 3 * 2 and all(asked) and fixed == [True] * 6
    assert [r.batch for r in report.rows] == [1, 1, 1, 2, 2, 2] and all(r.median_ms > 0 for r in report.rows)
    assert "CUDA graphs" in report.to_dict()["method"]


def test_fast_models_get_more_timed_runs_per_visit():
    calls = []
    runners = [lambda i=i: calls.append(i) for i in range(2)]
    ticks = iter(range(0, 10**12, 2_000_000))  # every run "takes" 2 ms
    times = interleave(runners, warmup=3, runs=2, rounds=3, untimed_per_visit=1, pause_s=0, visit_warm_s=0,
                       visit_s=0.02, seed=0, clock=lambda: next(ticks))
    assert [len(t) for t in times] == [3 * 10, 3 * 10]  # 20 ms of 2 ms runs per visit, not 2
    times = interleave(runners, warmup=3, runs=4, rounds=2, untimed_per_visit=1, pause_s=0, visit_warm_s=0,
                       visit_s=0.002, seed=0, clock=lambda: next(ticks))
    assert [len(t) for t in times] == [2 * 4, 2 * 4]  # runs is the minimum


def test_shapes_for_batch():
    m = conv_net(4)
    assert shapes_for_batch(m, {}, 8) == {"x": [8, 3, 8, 8]}
    fixed = conv_net(4, batch=1)
    assert shapes_for_batch(fixed, {}, 1) == {"x": [1, 3, 8, 8]}
    with pytest.raises(OptionError, match="fixed first dim 1"):
        shapes_for_batch(fixed, {}, 4)
    with pytest.raises(OptionError, match="names no input"):
        shapes_for_batch(m, {"nope": [1]}, 1)


def test_default_batch_follows_the_model(tmp_path):
    p = tmp_path / "fixed.onnx"
    onnx.save(conv_net(4, batch=2), p)
    report = bench([p], BenchConfig(**FAST))
    assert [r.batch for r in report.rows] == [2, 2] and report.rows[0].macs == macs(4, 2)


def test_different_inputs_are_refused(tmp_path, two):
    other = conv_net(4)
    other.graph.input[0].name = "image"
    other.graph.node[0].input[0] = "image"
    with pytest.raises(OnnxPruneError, match="inputs"):
        bench([two[0], other], BenchConfig(**FAST))


def test_a_model_with_other_input_dims_is_refused_naming_the_input(tmp_path, two):
    other = conv_net(4)
    other.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 16  # x[N, 3, 16, 8]
    with pytest.raises(OnnxPruneError) as err:
        bench([two[0], other], BenchConfig(**FAST))
    message = str(err.value)
    assert "input 'x' is Nx3x16x8 float32, but is given 1x3x8x8 float32" in message
    assert "first model" in message and "\n" not in message


def test_bad_config():
    with pytest.raises(OptionError, match="^threads must be at least 1"):
        bench([conv_net(4)], BenchConfig(threads=(0,), **FAST))
    with pytest.raises(OptionError, match="unknown provider"):
        bench([conv_net(4)], BenchConfig(providers=("rocm",), **FAST))


def test_speedup_interval_resamples_whole_rounds():
    base = np.full((10, 3), 10.0)
    assert speedup_interval(base, base / 2.0) == (2.0, 2.0)  # no spread: a point
    assert speedup_interval(base[:1], base[:1]) == (None, None)  # one round: no interval
    rng = np.random.default_rng(0)
    drift = rng.uniform(1.0, 1.5, size=(10, 1))  # the machine slows down in some rounds, for both models alike
    low, high = speedup_interval(base * drift, base * drift / 2.0)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)  # paired rounds: the drift cancels
    noisy = base * rng.uniform(0.8, 1.2, size=(10, 3))
    low, high = speedup_interval(base, noisy, seed=3)
    median = 10.0 / np.median(noisy)
    assert low < median < high and high - low > 0.02
    assert speedup_interval(base, noisy, seed=3) == (low, high)  # seeded


def _fake(speedups, control, intervals=None):
    rows = [BenchRow("dense.onnx", "dense.onnx", "cpu", 1, 1, median_ms=2.0, p10_ms=1.9, p90_ms=2.1, runs=50,
                     throughput=500.0, speedup=1.0, macs=100, mac_ratio=1.0, efficiency=1.0)]
    for i, s in enumerate(speedups):
        low, high = (intervals or {}).get(i, (None, None))
        rows.append(BenchRow(f"p{i}.onnx", f"p{i}.onnx", "cpu", 1, 1, median_ms=2.0 / s, p10_ms=1.0, p90_ms=3.0,
                             runs=50, throughput=500.0 * s, speedup=s, speedup_low=low, speedup_high=high, macs=50,
                             mac_ratio=0.5, efficiency=s * 0.5))
    rows.append(BenchRow("dense.onnx (control)", "dense.onnx", "cpu", 1, 1, control=True, median_ms=2.0 / control,
                         p10_ms=1.9, p90_ms=2.1, runs=50, throughput=1.0, speedup=control, macs=100, mac_ratio=1.0,
                         efficiency=control))
    return BenchReport(rows=rows, config=BenchConfig(), environment={"onnxruntime": "x", "cpu_count": 2})


def test_markdown_states_noise_plainly():
    md = format_markdown(_fake([1.02, 1.8], control=0.97))
    assert "| dense.onnx (control) |" in md and "|---|" in md
    assert "within ±3.0% of 1.00x are noise" in md
    assert "p0.onnx: 1.02x is within the control's noise: no measurable speedup." in md
    assert "p1.onnx: 1.80x (faster) is beyond the control's noise, efficiency 0.90." in md
    text = format_table(_fake([1.005], control=1.0))
    assert "within noise" in text  # the floor: a control of exactly 1.00x still means ±1%


def test_a_small_speedup_is_called_only_when_its_whole_interval_clears_the_noise():
    report = _fake([1.04, 1.04, 0.95, 1.30], control=1.01, intervals={0: (1.01, 1.07), 1: (1.03, 1.05),
                                                                      2: (0.93, 0.97), 3: (1.25, 1.35)})
    control = report.rows[-1]
    control.speedup_low, control.speedup_high = 0.98, 1.02
    assert report.noise(report.rows) == pytest.approx(0.02)  # the interval's far end, not the point (1%)
    verdicts = [line.split("|")[-2].strip() for line in format_markdown(report).splitlines()
                if line.startswith("| p")]
    assert verdicts == ["within noise", "faster", "slower", "faster"]
    md = format_markdown(report)
    assert "| 1.01-1.07 |" in md and "95% interval 0.98-1.02" in md
    assert "p0.onnx: 1.04x is within the control's noise: no measurable speedup." in md


# ---------------------------------------------------------------------------------------------------------------
# The command


def _args(two, *extra):
    return ["bench", str(two[0]), str(two[1]), "--warmup", "1", "--runs", "1", "--rounds", "2", *extra]


def test_cli_json_and_markdown(two, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    r = run(*_args(two, "--json", "--batch", "2", "--threads", "1", "--threads", "2",
                                       "--provider", "cpu", "--provider", "cuda", "--shape", "x=1x3x8x8"))
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    keys = [(row["provider"], row["threads"], row["batch"], row["status"]) for row in d["rows"]]
    assert keys == [("cpu", 1, 2, "ok")] * 3 + [("cpu", 2, 2, "ok")] * 3 + [("cuda", 1, 2, "unavailable")] * 3 \
        + [("cuda", 2, 2, "unavailable")] * 3
    assert "bench:" in r.stderr  # progress goes to stderr, the report alone to stdout
    r = run(*_args(two, "--markdown"))
    assert r.exit_code == 0 and "### cpu, 1 thread, batch 1" in r.stdout and "noise" in r.stdout
    r = run(*_args(two))
    assert r.exit_code == 0 and "dense.onnx (control)" in r.stdout


def test_cli_errors(two, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    r = run(*_args(two, "--provider", "cuda", "--require-provider"))
    assert r.exit_code == 1 and "not available" in r.output and "Traceback" not in r.output
    r = run(*_args(two, "--shape", "x=1x3"))
    assert r.exit_code == 1 and "rank" in r.output
    r = run(*_args(two, "--json", "--markdown"))
    assert r.exit_code == 1 and "exclusive" in r.output
    r = run("bench", "missing.onnx")
    assert r.exit_code == 1 and "no such file" in r.output
    r = run(*_args(two, "--cuda-graph"))
    assert r.exit_code == 1 and "--cuda-graph needs --provider cuda" in r.output and "Traceback" not in r.output
    r = run(*_args(two, "--visit-ms", "-1"))
    assert r.exit_code == 1 and "must not be negative" in r.output


def test_cli_fp16_and_visit_length(two):
    r = run(*_args(two, "--json", "--fp16", "--visit-ms", "5"))
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["config"]["fp16"] is True and d["config"]["visit_ms"] == 5.0
    assert all("float16 (cosine to float32" in row["note"] for row in d["rows"])
    assert all(row["runs"] >= 2 for row in d["rows"])  # at least --runs x --rounds


def test_run_failure_is_a_one_line_user_error():
    # claims a dynamic batch but reshapes to a fixed [1, 192]: batch 2 cannot run
    graph = h.make_graph(
        [h.make_node("Reshape", ["x", "s"], ["y"])], "bad",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])], [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(np.array([1, 192], np.int64), "s")],
    )
    bad = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)
    with pytest.raises(OnnxPruneError, match="bad: onnxruntime failed to run"):
        bench([bad], BenchConfig(batches=(2,), **FAST))


def test_speedup_pairs_rounds_so_a_level_switch_cancels():
    # Latency that switches between two levels for seconds at a time (a GPU at batch 1): one round caught the
    # switch between its two visits. Pooled medians land on different levels (1.5 vs 1.0 ms, "1.5x");
    # per-round ratios see the switch once and the speedup stays 1.0x.
    levels = np.array([2.0] * 5 + [1.0] * 5)
    base = np.repeat(levels[:, None], 5, axis=1)
    other = base.copy()
    other[4] = 1.0
    assert np.median(base) / np.median(other) == pytest.approx(1.5)
    assert bench_mod.paired_speedup(base, other) == pytest.approx(1.0)
    low, high = bench_mod.speedup_interval(base, other)
    assert low == pytest.approx(1.0) and high <= 2.0
    faster = base / 2.0
    assert bench_mod.paired_speedup(base, faster) == pytest.approx(2.0)
    assert bench_mod.speedup_interval(base, faster) == (pytest.approx(2.0), pytest.approx(2.0))


def test_noisy_gpu_control_gets_a_hint_that_names_cuda_graph():
    def rows(provider, low, high):
        return [bench_mod.BenchRow("dense", "d", provider, 1, 1, median_ms=1.0, speedup=1.0, speedup_low=1.0,
                                   speedup_high=1.0),
                bench_mod.BenchRow("dense (control)", "d", provider, 1, 1, control=True, median_ms=1.0, speedup=1.0,
                                   speedup_low=low, speedup_high=high)]

    def text(provider, low, high, **cfg):
        report = bench_mod.BenchReport(rows=rows(provider, low, high), config=bench_mod.BenchConfig(**cfg),
                                       environment={})
        return "\n".join(bench_mod._noise_lines(report, report.rows))

    assert "--cuda-graph removes the launches" in text("cuda", 0.78, 1.25)
    assert "--cuda-graph" not in text("cuda", 0.97, 1.03)  # a quiet control
    assert "--cuda-graph" not in text("cpu", 0.78, 1.25)  # the CPU has no launches to remove
