"""`prune --latency-target 0.5` against uniform L1 pruning at the same measured latency (CPU, 1 thread, batch 1).

For each model: the latency-aware plan (onnxprune.latency_target, its profile cached under bench-out/latency-cache)
and uniform L1 pruning at several ratios are timed beside the dense model in ONE interleaved bench run; the
uniform ratio whose measured latency is closest to the latency-aware model's is its match. Both are compared on
fidelity (relative error of the outputs against the dense model; random inputs, or the held-out test images for
the digit classifiers) and, for the trained digit classifiers, on accuracy. Called by run_all.py; alone:

    .venv/bin/python benchmarks/latency.py [--quick] [--json bench-out/latency.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxprune  # noqa: E402
from onnxprune.bench import BenchConfig, bench  # noqa: E402
from onnxprune.inputs import load_inputs_npz, make_inputs  # noqa: E402
from onnxprune.io import save_model  # noqa: E402
from onnxprune.latency import Deployment  # noqa: E402
from onnxprune.latency_target import prune_to_latency  # noqa: E402
from onnxprune.target import round_to_for  # noqa: E402
from onnxprune.verify import compare  # noqa: E402

OUT = ROOT / "bench-out"
TARGET = 0.5
TOLERANCE = 0.05
MATCH = 0.05  # a uniform model is compared only when its measured fraction of dense is this close
UNIFORM_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
TEST_X = ROOT / "models" / "digits_test.npz"
TEST_Y = ROOT / "models" / "digits_test_labels.npy"
CALIB = ROOT / "models" / "digits_calib.npz"  # the digit classifiers: both plans recovered on it (recover all)


def models(cache: Path) -> list[tuple[str, Path, dict, bool]]:
    """(name, path, pinned shapes, has labels)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from models import zoo
    from run_all import BERT_SHAPES, bert_mini

    out = []
    for name, build, shapes in (("mobilenet_v2", zoo.mobilenet_v2, {}), ("resnet18", zoo.resnet18, {}),
                                ("bert_mini", bert_mini, BERT_SHAPES)):
        path = cache / f"{name}.onnx"
        if not path.exists():
            onnx.save(build(), str(path))
        out.append((name, path, shapes, False))
    for name in ("digits_resnet", "digits_cnn"):
        out.append((name, ROOT / "models" / f"{name}.onnx", {}, True))
    from benchmarks.torchvision_exports import fetch  # exported by somebody else (the done-criterion)

    for name, path in fetch(cache / "torchvision_exports").items():
        out.append((name, path, {}, False))
    return out


def one_model(name: str, path: Path, shapes: dict, labelled: bool, work: Path, quick: bool) -> dict:
    round_to = round_to_for("auto")
    start = time.perf_counter()
    calib = str(CALIB) if labelled else None
    aware = prune_to_latency(str(path), TARGET, Deployment("cpu", 1, 1), round_to=round_to, shapes=shapes or None,
                             calib=calib,
                             cache_dir=OUT / "latency-cache", tolerance=TOLERANCE,
                             progress=lambda m: print(f"{name}: {m}", file=sys.stderr),
                             warn=lambda m: print(f"{name}: warning: {m}", file=sys.stderr))
    seconds = time.perf_counter() - start
    aware_path = work / f"{name}_latency{TARGET:g}.onnx"
    save_model(aware.model, aware_path)
    paths = [path, aware_path]
    for ratio in UNIFORM_RATIOS:
        p = work / f"{name}_uniform{ratio:g}.onnx"
        save_model(onnxprune.prune(str(path), ratio=ratio, round_to=round_to, shapes=shapes or None,
                                   calib=calib).model, p)
        paths.append(p)
    config = BenchConfig(threads=(1,), batches=(1,), rounds=4 if quick else 12, runs=3, warmup=3, shapes=shapes)
    print(f"{name}: timing dense, latency-aware and uniform {UNIFORM_RATIOS}", file=sys.stderr)
    report = bench([str(p) for p in paths], config)
    rows = [r for r in report.rows if r.status == "ok"]
    fraction = {r.source: 1.0 / r.speedup for r in rows if not r.control}
    aware_fraction = fraction[str(aware_path)]
    uniform = min(paths[2:], key=lambda p: abs(fraction[str(p)] - aware_fraction))
    if labelled:
        feeds, labels = load_inputs_npz(TEST_X, str(path)), np.load(TEST_Y)
    else:
        feeds, labels = make_inputs(str(path), shapes=shapes or None, samples=4, seed=0), None

    def fidelity(p: Path) -> dict:
        r = compare(str(path), str(p), feeds, labels=labels)
        return {
            "rel_error": max(o.rel_error for o in r.outputs if o.rel_error is not None),
            "cosine": min(o.cosine for o in r.outputs if o.cosine is not None),
            "accuracy": r.accuracy.pruned if r.accuracy else None,
            "dense_accuracy": r.accuracy.dense if r.accuracy else None,
        }

    every = {p.name: fidelity(p) for p in paths[2:]}
    quality = {"aware": fidelity(aware_path), "uniform": every[uniform.name]}
    lat = aware.latency
    return {
        "model": name, "target": TARGET, "round_to": round_to, "seconds": seconds,
        "loop_fraction": lat.measured_fraction, "reached_in_loop": lat.reached, "steps": len(lat.steps),
        "profile": lat.profile, "predicted_fraction": lat.predicted_fraction,
        "measured_fraction": aware_fraction, "within": abs(aware_fraction - TARGET) <= TOLERANCE * TARGET,
        "noise": report.noise(rows), "uniform": uniform.name, "uniform_fraction": fraction[str(uniform)],
        "uniform_fractions": {p.name: fraction[str(p)] for p in paths[2:]}, "uniform_quality": every,
        "quality": quality, "latency_report": lat.to_dict(),
    }


def loses_less(a: dict, u: dict) -> bool:
    """a loses no more than u: accuracy (where measured) and relative error."""
    if a["accuracy"] is not None and a["accuracy"] < u["accuracy"]:
        return False
    return a["rel_error"] <= u["rel_error"]


def between(r: dict) -> str:
    """The verdict when no uniform model lands within MATCH of the latency-aware one: against its neighbours, the
    fastest uniform model that is slower and the slowest that is faster (a model with more time should lose less)."""
    aware, q, fr = r["measured_fraction"], r.get("uniform_quality") or {}, r["uniform_fractions"]
    slower = min((n for n in fr if fr[n] > aware and n in q), key=fr.get, default=None)
    faster = max((n for n in fr if fr[n] < aware and n in q), key=fr.get, default=None)
    a = r["quality"]["aware"]
    if slower is not None and loses_less(a, q[slower]):
        return f"yes: less than {slower} ({fr[slower]:.3f}), which is slower"
    if faster is not None and not loses_less(a, q[faster]):
        return f"**no**: more than {faster} ({fr[faster]:.3f}), which is faster"
    return f"n/a: no uniform ratio within {MATCH:g} of its latency, and it lies between its neighbours"


def markdown(results: list[dict]) -> str:
    lines = [
        "## Pruning to a latency budget: --latency-target 0.5 (CPU, 1 thread, batch 1)",
        "",
        f"`prune --latency-target {TARGET}` against uniform L1 pruning at the same measured latency: dense, the "
        f"latency-aware model and uniform L1 at ratios {', '.join(map(str, UNIFORM_RATIOS))} in one interleaved "
        "bench run; the uniform model closest in measured latency is the match (when none is within "
        f"{MATCH:g}, the neighbours: losing less than a slower uniform model is a yes, more than a faster one a "
        "no). Fidelity: relative error of the "
        "outputs (random inputs; the 1,000 held-out test images for the digit classifiers, with accuracy). "
        f"Measured = this run's bench, independent of the loop's own measurement; within = within ±{TOLERANCE * 100:g}% "
        "of the target. tv_resnet18 and tv_mobilenet_v2 are torchvision's networks as somebody else exported them "
        "(benchmarks/torchvision_exports.py: zigzag-dse's workload graphs, weights filled at random). "
        "Random-weight models: no calibration data, no recovery; the trained digit classifiers: both plans "
        "L1-scored and recovered without training on models/digits_calib.npz (500 unlabelled images).",
        "",
        "| model | predicted | loop | measured | within | noise | uniform match (measured) | rel. error aware / "
        "uniform | accuracy aware / uniform (dense) | aware loses less | latency profile | wall s |",
        "|---|---:|---:|---:|---|---:|---|---:|---:|---|---|---:|",
    ]
    for r in results:
        a, u = r["quality"]["aware"], r["quality"]["uniform"]
        acc = "-" if a["accuracy"] is None else f"{a['accuracy']:.4f} / {u['accuracy']:.4f} ({a['dense_accuracy']:.4f})"
        verdict = "yes" if loses_less(a, u) else "**no**"
        if abs(r["uniform_fraction"] - r["measured_fraction"]) > MATCH:
            verdict = between(r)
        lines.append(
            f"| {r['model']} | {r['predicted_fraction']:.3f} | {r['loop_fraction']:.3f} | {r['measured_fraction']:.3f} "
            f"| {'yes' if r['within'] else '**no**'} | ±{(r['noise'] or 0) * 100:.1f}% | {r['uniform']} "
            f"({r['uniform_fraction']:.3f}) | {a['rel_error']:.4f} / {u['rel_error']:.4f} | {acc} | "
            f"{verdict} | {r['profile']} | {r['seconds']:.0f} |")
    lines += ["", "Predicted: the latency model's fraction of dense for the kept plan; loop: what the prune loop "
              "measured for it; measured: this table's bench run."]
    return "\n".join(lines) + "\n"


def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=str(OUT / "latency.json"))
    parser.add_argument("--models", default=None, help="comma-separated subset of the model names")
    args = parser.parse_args()
    return run(args.quick, Path(args.json), args.models.split(",") if args.models else None)


def run(quick: bool, json_path: Path, only=None) -> str:
    cache = OUT / "models"
    cache.mkdir(parents=True, exist_ok=True)
    work = OUT / "latency"
    work.mkdir(parents=True, exist_ok=True)
    results = [one_model(name, path, shapes, labelled, work, quick)
               for name, path, shapes, labelled in models(cache) if only is None or name in only]
    json_path.write_text(json.dumps(results, indent=2))
    return markdown(results)


if __name__ == "__main__":
    print(main())
