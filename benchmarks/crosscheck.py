"""Does `onnxprune bench` agree with an independent timing of the same files?

The independent timing shares no code with onnxprune.bench: each measurement is a fresh Python process that
loads one model into a plain onnxruntime session (same thread settings), runs it WARMUP times untimed and then
RUNS times timed with time.perf_counter, and prints the median. Processes alternate between the models
(A B A B ..., REPEATS times each) so that slow drifts of the machine hit both; the speedup is the ratio of the
medians of the per-process medians, with a 95% interval from resampling the (A, B) process pairs. Then
`onnxprune bench` times the same files in one process, and the two speedups and their intervals are printed side
by side with bench's control row (its noise band); they agree when the intervals overlap.

    .venv/bin/python benchmarks/crosscheck.py DENSE PRUNED [--threads 1] [--batch 1] [--shape NAME=1x3x224x224]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLAIN = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
path, threads, batch, warmup, runs, shapes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
o = ort.SessionOptions()
o.intra_op_num_threads = threads
o.inter_op_num_threads = 1
o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
feed = {}
for i in s.get_inputs():
    dims = shapes.get(i.name) or [d if isinstance(d, int) else 1 for d in i.shape]
    dims = [batch] + list(dims[1:])
    if "int" in i.type:
        feed[i.name] = rng.integers(0, 2, size=dims).astype(np.int64 if "int64" in i.type else np.int32)
    else:
        feed[i.name] = rng.standard_normal(dims).astype(np.float16 if "float16" in i.type else np.float32)
for _ in range(warmup):
    s.run(None, feed)
times = []
for _ in range(runs):
    t = time.perf_counter()
    s.run(None, feed)
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2] * 1e3}))
"""


def plain_median(path: str, threads: int, batch: int, shapes: dict, warmup: int, runs: int) -> float:
    out = subprocess.run([sys.executable, "-c", PLAIN, path, str(threads), str(batch), str(warmup), str(runs),
                          json.dumps(shapes)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def main() -> None:
    import numpy as np

    from onnxprune.bench import BenchConfig, bench, speedup_interval
    from onnxprune.inputs import parse_shapes

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dense")
    parser.add_argument("pruned")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--shape", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=5, help="processes per model")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    shapes = parse_shapes(args.shape)
    medians = {args.dense: [], args.pruned: []}
    for _ in range(args.repeats):
        for path in (args.dense, args.pruned):
            medians[path].append(plain_median(path, args.threads, args.batch, shapes, args.warmup, args.runs))
    plain = {p: statistics.median(v) for p, v in medians.items()}
    plain_speedup = plain[args.dense] / plain[args.pruned]
    spread = {p: (min(v), max(v)) for p, v in medians.items()}
    pairs = [np.asarray(medians[p], dtype=np.float64).reshape(-1, 1) for p in (args.dense, args.pruned)]
    plain_interval = speedup_interval(*pairs)

    report = bench([args.dense, args.pruned], BenchConfig(threads=(args.threads,), batches=(args.batch,),
                                                         rounds=8, runs=3, warmup=3, shapes=shapes))
    rows = [r for r in report.rows if not r.control]
    bench_speedup = rows[1].speedup
    bench_interval = (rows[1].speedup_low, rows[1].speedup_high)
    control = next((r.speedup for r in report.rows if r.control), None)
    result = {
        "dense": args.dense, "pruned": args.pruned, "threads": args.threads, "batch": args.batch,
        "plain_ms": plain, "plain_ms_range": spread, "plain_speedup": plain_speedup,
        "bench_speedup": bench_speedup, "bench_control": control,
        "plain_interval": plain_interval, "bench_interval": bench_interval,
        "agree": plain_interval[0] <= bench_interval[1] and bench_interval[0] <= plain_interval[1],
        "difference": bench_speedup / plain_speedup - 1.0,
    }
    lo_d, hi_d = spread[args.dense]
    lo_p, hi_p = spread[args.pruned]
    print(f"independent (a fresh process per measurement, {args.repeats} each): dense {plain[args.dense]:.3f} ms "
          f"({lo_d:.3f}-{hi_d:.3f}), pruned {plain[args.pruned]:.3f} ms ({lo_p:.3f}-{hi_p:.3f}) -> {plain_speedup:.2f}x (95% interval {plain_interval[0]:.2f}-{plain_interval[1]:.2f})")
    print(f"onnxprune bench: {bench_speedup:.2f}x (95% interval {bench_interval[0]:.2f}-{bench_interval[1]:.2f}; "
          f"control row {control:.3f}x)")
    print(f"difference: {result['difference'] * 100:+.1f}%; the intervals {'overlap' if result['agree'] else 'do not overlap'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
