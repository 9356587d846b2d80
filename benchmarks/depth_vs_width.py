"""Depth against width at equal MACs on the CPU (1 thread, batch 1 and 8): latency, and accuracy on the trained
digit ResNet.

For each model and depth setting, the depth-pruned model (whole residual blocks removed) is matched by a width-
pruned one whose ratio is searched until its MACs come closest to the depth-pruned model's (kept counts rounded to
this CPU's channel block, --target auto; both MAC ratios are reported). Dense, depth and width are timed side by side in one interleaved bench run.

Accuracy (models/digits_resnet.onnx, 1,000 held-out test images): depth and width alone; width + training-free
recovery on the 256 calibration images (depth has no recovery: no layer is left to refit); each then fine-tuned
for 10% of the original 20 epochs (2) on the labelled training split, distilled from the dense model.

    .venv/bin/python benchmarks/depth_vs_width.py [--json bench-out/depth_vs_width.json] [--quick] [--skip-finetune]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxprune  # noqa: E402
from onnxprune.bench import BenchConfig, bench  # noqa: E402
from onnxprune.target import round_to_for  # noqa: E402

OUT = ROOT / "bench-out"
DIGITS = ROOT / "models" / "digits_resnet.onnx"
CALIB = ROOT / "models" / "digits_calib.npz"
ROUND_TO = round_to_for("auto")


def matched_width(path: str, macs: int, shapes=None, calib=None) -> tuple[float, "onnxprune.PruneResult"]:
    """The width ratio whose pruned MACs come closest to `macs`, by bisection, and its result. Kept counts are
    rounded to this CPU's channel block (--target auto), as a user would prune for speed: odd counts would cost
    width its speed, not depth."""
    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        mid = (lo + hi) / 2
        result = onnxprune.prune(path, ratio=mid, round_to=ROUND_TO, shapes=shapes, calib=calib)
        got = result.report.after.macs
        if best is None or abs(got - macs) < abs(best[1].report.after.macs - macs):
            best = (mid, result)
        if abs(got - macs) <= 0.01 * macs:
            break
        lo, hi = (mid, hi) if got > macs else (lo, mid)
    return best


def latency_rows(name: str, path: Path, settings: list[dict], batches, work: Path, quick: bool) -> list[dict]:
    rows = []
    for setting in settings:
        depth = onnxprune.prune(str(path), **setting)
        macs = depth.report.after.macs
        ratio, width = matched_width(str(path), macs)
        tag = "_".join(f"{k}{v}" for k, v in setting.items())
        depth_path, width_path = work / f"{name}_{tag}.onnx", work / f"{name}_width{ratio:.3f}.onnx"
        depth.save(depth_path)
        width.save(width_path)
        before = depth.report.before.macs
        removed = [b.name for b in depth.report.depth.blocks if b.removed]
        for batch in batches:
            config = BenchConfig(threads=(1,), batches=(batch,), rounds=4 if quick else 12, runs=3, warmup=3)
            report = bench([str(path), str(depth_path), str(width_path)], config)
            ok = [r for r in report.rows if r.status == "ok" and not r.control]
            rows.append({
                "model": name, "setting": tag, "batch": batch, "blocks_removed": removed,
                "depth_macs": macs / before, "width_ratio": ratio, "width_macs": width.report.after.macs / before,
                "dense_ms": ok[0].median_ms, "depth_ms": ok[1].median_ms, "width_ms": ok[2].median_ms,
                "depth_speedup": ok[1].speedup, "width_speedup": ok[2].speedup,
                "depth_interval": [ok[1].speedup_low, ok[1].speedup_high],
                "width_interval": [ok[2].speedup_low, ok[2].speedup_high],
                "noise": report.noise(report.rows),
            })
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def accuracy_row(cache: Path, finetune_too: bool) -> dict:
    from benchmarks.finetune import ORIGINAL_EPOCHS, accuracy, training_split

    depth = onnxprune.prune(str(DIGITS), remove_blocks=1)
    ratio, width = matched_width(str(DIGITS), depth.report.after.macs)
    _, recovered = matched_width(str(DIGITS), depth.report.after.macs, calib=str(CALIB))
    row = {"model": "digits_resnet", "dense": accuracy(str(DIGITS)),
           "depth_macs": depth.report.after.macs / depth.report.before.macs, "width_ratio": ratio,
           "width_macs": width.report.after.macs / width.report.before.macs,
           "depth": accuracy(depth.model), "width": accuracy(width.model), "width_recovered": accuracy(recovered.model)}
    if finetune_too:
        from onnxprune.calib import check_arrays
        from onnxprune.finetune.train import FinetuneOptions, finetune

        x_train, y_train = training_split(cache)
        epochs = round(ORIGINAL_EPOCHS * 0.1)
        for key, model in (("depth_ft", depth.model), ("width_recovered_ft", recovered.model)):
            train = check_arrays({"input": x_train}, model, "training split")
            tuned, report = finetune(model, str(DIGITS), train, y_train,
                                     FinetuneOptions(epochs=epochs, batch_size=64, patience=None))
            row[key] = accuracy(tuned)
            row[f"{key}_kept_epoch"] = report.best_epoch
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def markdown(data: dict) -> str:
    lines = ["## Depth against width at equal MACs (CPU, 1 thread)", "",
             "Depth: whole residual blocks removed (`--depth-ratio`/`--remove-blocks`, scored by weights); width: "
             f"`--ratio` searched until the MACs come closest (`--round-to {ROUND_TO}`, this CPU's block). Dense, "
             "depth and width timed side by side in one interleaved run per batch (12 rounds); speedups are paired "
             "per-round ratios with their 95% interval.", "",
             "| model | depth setting (blocks removed) | batch | MACs depth / width | depth speedup | width speedup "
             "(ratio) | control noise |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in data["latency"]:
        lines.append(
            f"| {r['model']} | {r['setting']} ({len(r['blocks_removed'])}) | {r['batch']} | {r['depth_macs']:.3f} / "
            f"{r['width_macs']:.3f} | {r['depth_speedup']:.2f}x ({r['depth_interval'][0]:.2f}-"
            f"{r['depth_interval'][1]:.2f}) | {r['width_speedup']:.2f}x ({r['width_interval'][0]:.2f}-"
            f"{r['width_interval'][1]:.2f}; {r['width_ratio']:.3f}) | ±{(r['noise'] or 0) * 100:.1f}% |")
    a = data.get("accuracy")
    if a:
        ft = "depth_ft" in a
        lines += ["", f"Accuracy of the trained digit ResNet (its one removable block, MACs x{a['depth_macs']:.3f}; "
                  f"width ratio {a['width_ratio']:.3f}, MACs x{a['width_macs']:.3f}), 1,000 held-out test images; "
                  "recovery on the 256 calibration images" + ("; fine-tuning 2 epochs (10% of the original 20) on "
                  "the 3,500 labelled training images, distilled from the dense model:" if ft else ":"), "",
                  "| dense | depth | width | width + recovery |" + (" depth + fine-tune | width + recovery + fine-tune |"
                                                                     if ft else ""),
                  "|---:|---:|---:|---:|" + ("---:|---:|" if ft else ""),
                  f"| {a['dense']:.3f} | {a['depth']:.3f} | {a['width']:.3f} | {a['width_recovered']:.3f} |"
                  + (f" {a['depth_ft']:.3f} | {a['width_recovered_ft']:.3f} |" if ft else "")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=OUT / "depth_vs_width.json")
    parser.add_argument("--quick", action="store_true", help="4 rounds, batch 1 only")
    parser.add_argument("--skip-finetune", action="store_true")
    args = parser.parse_args()
    from models import zoo

    work = OUT / "depth_vs_width"
    work.mkdir(parents=True, exist_ok=True)
    resnet = OUT / "models" / "resnet18.onnx"
    if not resnet.exists():
        resnet.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(zoo.resnet18(), str(resnet))
    batches = (1,) if args.quick else (1, 8)
    data = {"latency": latency_rows("resnet18", resnet, [{"depth_ratio": 0.25}, {"depth_ratio": 0.5}], batches,
                                    work, args.quick)
            + latency_rows("digits_resnet", DIGITS, [{"remove_blocks": 1}], batches, work, args.quick),
            "accuracy": accuracy_row(OUT / "cache", not args.skip_finetune)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2))
    print(markdown(data))


if __name__ == "__main__":
    main()
