"""`make bench`: speed of dense vs structured vs unstructured pruning, and the cost of pruning itself.

Writes bench-out/*.json and docs/benchmarks.md. Models are built in code (random weights: latency does not
depend on the values) and cached under bench-out/models. Every speed table is one interleaved run
(see shared BENCHMARKING.md and onnxprune/bench.py): compare ratios within a table, never across tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxprune  # noqa: E402
from models import zoo  # noqa: E402
from onnxprune.bench import BenchConfig, bench, format_markdown  # noqa: E402
from onnxprune.io import save_model  # noqa: E402
from onnxprune.unstructured import prune_unstructured  # noqa: E402

OUT = ROOT / "bench-out"
DOC = ROOT / "docs" / "benchmarks.md"


BERT_SHAPES = {"input_ids": [1, 128], "attention_mask": [1, 128], "token_type_ids": [1, 128]}


def bert_mini():
    """BERT-mini (4 layers, hidden 256, 4 heads, FFN 1024): heads and FFN neurons prune at --ratio."""
    from models import transformers

    return transformers.bert(layers=4, hidden=256, heads=4, ffn=1024, vocab=30522)


def variants(name: str, build, cache: Path, shapes=None) -> list[Path]:
    """dense, structured 0.5 (default settings), structured 0.5 unrounded, unstructured 50% and 90%."""
    dense = cache / f"{name}.onnx"
    if not dense.exists():
        onnx.save(build(), str(dense))
    out = [dense]
    for label, kwargs in (("s50", {}), ("s50_round1", {"round_to": 1})):
        path = cache / f"{name}_{label}.onnx"
        if not path.exists():
            save_model(onnxprune.prune(str(dense), ratio=0.5, shapes=shapes, **kwargs).model, path)
        out.append(path)
    for sparsity in (0.5, 0.9):
        path = cache / f"{name}_u{int(sparsity * 100)}.onnx"
        if not path.exists():
            save_model(prune_unstructured(onnx.load(str(dense)), sparsity)[0], path)
        out.append(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, batch 1 only (for a smoke run)")
    parser.add_argument("--skip-cost", action="store_true", help="skip the prune time/memory benchmark")
    parser.add_argument("--skip-recovery", action="store_true", help="skip the accuracy/recovery benchmark")
    parser.add_argument("--skip-latency", action="store_true", help="skip the --latency-target benchmark")
    parser.add_argument("--skip-finetune", action="store_true", help="skip the fine-tuning benchmark (~1 h on 2 cores)")
    parser.add_argument("--skip-depth", action="store_true", help="skip depth against width at equal MACs")
    parser.add_argument("--skip-recurrent", action="store_true", help="skip the recurrent model (ddddocr, ~5 min)")
    args = parser.parse_args()
    cache = OUT / "models"
    cache.mkdir(parents=True, exist_ok=True)
    sections = []
    speed = {}
    for name, build, shapes, title in (
        ("resnet18", zoo.resnet18, None, "224x224"),
        ("mobilenet_v2", zoo.mobilenet_v2, None, "224x224"),
        ("bert_mini", bert_mini, BERT_SHAPES, "sequence 128 (heads 50% + FFN 50%)"),
    ):
        paths = variants(name, build, cache, shapes)
        config = BenchConfig(
            threads=(1, 2), batches=(1,) if args.quick else (1, 8),
            rounds=4 if args.quick else 12, runs=3, warmup=3, shapes={k: v for k, v in (shapes or {}).items()},
        )
        print(f"bench {name}: {', '.join(p.name for p in paths)}", file=sys.stderr)
        report = bench([str(p) for p in paths], config)
        speed[name] = report.to_dict()
        sections.append(f"## {name} at {title}\n\n" + format_markdown(report).split("\n", 2)[2])
        if shapes:  # transformers: how close the pruned hidden states stay to the dense ones
            sections.append(fidelity_table(paths, shapes))
    sections.insert(0, targets_section(speed))
    if not args.skip_latency:  # prune --latency-target 0.5 against uniform L1 at the same measured latency
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import latency

        sections.insert(1, latency.run(args.quick, OUT / "latency.json"))
    sections.append(layers_section(cache, quick=args.quick))
    sections.append(round_to_section(cache, quick=args.quick))
    sections.append(crosscheck_section(cache))
    (OUT / "speed.json").write_text(json.dumps(speed, indent=2))
    sections.append(sweep_section(cache / "resnet18.onnx", quick=args.quick))
    if not args.skip_depth:
        depth_json = OUT / "depth_vs_width.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "depth_vs_width.py"), "--json", str(depth_json)]
                       + (["--quick", "--skip-finetune"] if args.quick else []), check=True, stdout=subprocess.DEVNULL)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from depth_vs_width import markdown as depth_markdown

        sections.append(depth_markdown(json.loads(depth_json.read_text())))
    if not args.skip_recurrent:
        recurrent_json = OUT / "recurrent.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recurrent.py"), "--json", str(recurrent_json)]
                       + (["--quick"] if args.quick else []), check=True, stdout=subprocess.DEVNULL)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from recurrent import markdown as recurrent_markdown

        sections.append("## A recurrent model: convolutions and a bidirectional LSTM\n\n"
                        + recurrent_markdown(json.loads(recurrent_json.read_text())))
    cost_md = ""
    if not args.skip_cost:
        cost_json = OUT / "prune_cost.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prune_cost.py"), "--json", str(cost_json)], check=True)
        cost_md = cost_table(json.loads(cost_json.read_text()))
    if not args.skip_recovery:
        recovery_json = OUT / "recovery.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recovery.py"), "--json", str(recovery_json)],
                       check=True, stdout=subprocess.DEVNULL)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from recovery import markdown as recovery_markdown

        sections.append("## Accuracy after pruning: training-free recovery on trained digit classifiers\n\n"
                        + recovery_markdown(json.loads(recovery_json.read_text())))
    if not args.skip_finetune:
        finetune_json = OUT / "finetune.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune.py"), "--json", str(finetune_json)],
                       check=True, stdout=subprocess.DEVNULL)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from finetune import markdown as finetune_markdown

        sections.append("## Accuracy after pruning: fine-tuning by distillation\n\n"
                        + finetune_markdown(json.loads(finetune_json.read_text())))
    write_doc(sections, cost_md)
    print(f"wrote {DOC.relative_to(ROOT)} and bench-out/*.json", file=sys.stderr)


def fidelity_table(paths: list[Path], shapes: dict) -> str:
    """Cosine similarity of each variant's hidden states to the dense model's, on 4 random inputs."""
    from onnxprune.inputs import make_inputs
    from onnxprune.verify import compare

    feeds = make_inputs(str(paths[0]), shapes=shapes, samples=4, seed=0)
    lines = ["Fidelity (same random token ids, 4 samples): cosine of the pruned model's outputs to the dense "
             "model's; no calibration or fine-tuning (random weights: this shows that the model still computes "
             "its function's bulk, not task accuracy).", "", "| model | output | cosine | max abs error |", "|---|---|---:|---:|"]
    for path in paths[1:]:
        report = compare(str(paths[0]), str(path), feeds)
        for out in report.outputs:
            lines.append(f"| {path.name} | {out.name} | {out.cosine:.4f} | {out.max_abs:.3g} |")
    return "\n".join(lines) + "\n"


TARGETS = (  # (model, variant, what, test on a row dict)
    ("resnet18", "s50", "ResNet-18 structured 50%: efficiency >= 0.95", lambda r: r["efficiency"] >= 0.95),
    # MobileNetV2's time is spread unlike its MACs: its speed target is --latency-target 0.5 measured within 5%
    # (the latency section), which replaced efficiency >= 0.90 against MACs
    ("mobilenet_v2", "s50", "MobileNetV2 structured 50% (defaults): efficiency (for reference; its target is "
     "--latency-target 0.5, below)", None),
    ("bert_mini", "s50", "BERT-mini heads + FFN 50%: efficiency (no target; for reference)", None),
)


def _group_rows(report: dict):
    """(threads, batch, {label: row}) for every group of a bench report's JSON."""
    groups: dict = {}
    for r in report["rows"]:
        groups.setdefault((r["threads"], r["batch"]), {})[r["model"]] = r
    return [(t, b, rows) for (t, b), rows in groups.items()]


def targets_section(speed: dict) -> str:
    """The issue's speed targets against this run's tables, each group on its own line: met or missed."""
    columns = [f"{t} thread{'s' if t != 1 else ''} b{b}" for t, b, _ in _group_rows(speed["resnet18"])]
    lines = ["## Targets in this run", "", "| target | " + " | ".join(columns) + " | held |",
             "|---|" + "---:|" * len(columns) + "---|"]
    for name, variant, what, test in TARGETS:
        groups = _group_rows(speed[name])
        rows = [g[f"{name}_{variant}.onnx"] for _, _, g in groups]
        held = "-" if test is None else ("yes" if all(test(r) for r in rows) else "**no**")
        lines.append(f"| {what} | " + " | ".join(f"{r['efficiency']:.3f}" for r in rows) + f" | {held} |")
    for name in ("resnet18", "mobilenet_v2", "bert_mini"):
        groups = _group_rows(speed[name])
        for variant in ("u50", "u90"):
            rows = [g[f"{name}_{variant}.onnx"] for _, _, g in groups]
            verdicts = [f"{r['speedup']:.2f}x {_call(r, speed[name], t, b)}" for (t, b, _), r in zip(groups, rows)]
            held = "yes" if all(v.endswith("within noise") for v in verdicts) else "**no**"
            lines.append(f"| {name} unstructured {variant[1:]}%: speedup within noise of 1.0 | "
                         + " | ".join(verdicts) + f" | {held} |")
    lines += ["", "Efficiency = speedup / (1 / MAC ratio). Unstructured rows: the verdict of the table below "
              "(within noise unless the whole 95% interval of the speedup lies beyond the control's reach)."]
    return "\n".join(lines) + "\n"


def _call(row: dict, report: dict, threads: int, batch: int) -> str:
    from onnxprune.bench import BenchRow, speed_verdict

    noise = next(g["noise"] for g in report["groups"] if (g["threads"], g["batch"]) == (threads, batch))
    return speed_verdict(BenchRow(**row), noise)


def layers_section(cache: Path, quick: bool) -> str:
    """Per-layer kernel time (onnxprune bench --layers) of MobileNetV2 and ResNet-18 at 0.5, 1 thread."""
    from onnxprune.layers import compare_layers, format_report_markdown

    text = ["## Where the time goes: per-layer profile at structured 50% (1 thread)", "",
            "`onnxprune bench DENSE PRUNED --layers N` (onnxprune/layers.py): onnxruntime's profiler, one session at a "
            "time, kernel time per layer mapped back to the original nodes. The per-layer ideal is the speedup the "
            "pruned model would reach if every layer's time fell exactly with its own MACs; MAC efficiency = (ideal / "
            "MAC promise) x (measured / ideal). The first factor is how unevenly the time is spread against the "
            "MACs, which no choice of kernels can change at this pruning; the second is how well the layers "
            "themselves kept pace.", ""]
    for name in ("mobilenet_v2", "resnet18"):
        for batch in (1,) if quick else (1, 8):
            print(f"layers {name} batch {batch}", file=sys.stderr)
            report = compare_layers(str(cache / f"{name}.onnx"), str(cache / f"{name}_s50.onnx"), threads=1,
                                    batch=batch, warmup=5, runs=10 if quick else 40)
            text += [f"### {name}, batch {batch}", "", format_report_markdown(report, top=8)]
    return "\n".join(text) + "\n"


def round_to_section(cache: Path, quick: bool) -> str:
    """MobileNetV2 at ratio 0.5 with kept counts rounded to 1, 8, 16 and 32: the measurement behind --round-to."""
    paths = [cache / "mobilenet_v2.onnx"]
    for step in (1, 8, 16, 32):
        path = cache / f"mobilenet_v2_s50_rt{step}.onnx"
        if not path.exists():
            save_model(onnxprune.prune(str(paths[0]), ratio=0.5, round_to=step).model, path)
        paths.append(path)
    print("bench round-to", file=sys.stderr)
    report = bench([str(p) for p in paths], BenchConfig(threads=(1,), batches=(1,) if quick else (1, 8),
                                                        rounds=4 if quick else 12, runs=3, warmup=3))
    return ("## --round-to on this machine: MobileNetV2 at ratio 0.5, kept counts rounded to 1, 8, 16, 32\n\n"
            + format_markdown(report).split("\n", 2)[2])


def crosscheck_section(cache: Path) -> str:
    """benchmarks/crosscheck.py on ResNet-18 s50 and MobileNetV2 s50: bench vs an independent timing."""
    rows = ["`onnxprune bench`'s speedup against an independent timing of the same files (benchmarks/crosscheck.py: "
            "a fresh plain-onnxruntime process per measurement, models alternating, 7 processes each, 1 thread, "
            "batch 1); 95% intervals from resampling the independent process pairs and bench's rounds; they agree "
            "when the intervals overlap.", "",
            "| dense | pruned | independent | onnxprune bench | bench control | difference | agree |",
            "|---|---|---:|---:|---:|---:|---|"]
    for name in ("resnet18", "mobilenet_v2"):
        out = OUT / f"crosscheck_{name}.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crosscheck.py"), str(cache / f"{name}.onnx"),
                        str(cache / f"{name}_s50.onnx"), "--repeats", "7", "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        r = json.loads(out.read_text())
        (pl, ph), (bl, bh) = r["plain_interval"], r["bench_interval"]
        rows.append(f"| {name}.onnx | {name}_s50.onnx | {r['plain_speedup']:.2f}x ({pl:.2f}-{ph:.2f}) | "
                    f"{r['bench_speedup']:.2f}x ({bl:.2f}-{bh:.2f}) | {r['bench_control']:.3f}x | "
                    f"{r['difference'] * 100:+.1f}% | {'yes' if r['agree'] else '**no**'} |")
    return "## Cross-check: bench against an independent timing\n\n" + "\n".join(rows) + "\n"


def sweep_section(model: Path, quick: bool) -> str:
    """onnxprune sweep on ResNet-18: both methods across ratios; the plot is copied next to this doc."""
    import shutil

    from onnxprune.sweep import sweep

    print("sweep resnet18", file=sys.stderr)
    report = sweep(str(model), [0.1, 0.3, 0.5, 0.7, 0.9], str(OUT / "sweep_resnet18"),
                   config=BenchConfig(threads=(1,), rounds=2 if quick else 4, runs=2, warmup=2))
    text = "## Sweep: ResNet-18, structured vs unstructured (1 thread, batch 1)\n\n"
    text += report.format_markdown().split("\n", 2)[2]
    if "plot" in report.files:
        shutil.copy(report.files["plot"], DOC.parent / "sweep_resnet18.png")
        text += "\n![latency vs ratio](sweep_resnet18.png)\n"
    return text


def cost_table(data) -> str:
    """Markdown table of benchmarks/prune_cost.py's JSON."""
    labels = {"bare": "onnx.load + onnx.save", "no-check": "prune --ratio 0.5 --no-check", "check": "prune --ratio 0.5"}
    lines = [
        f"Whole processes, median of {data['repeat']} runs each, peak RSS of the process. "
        f"Targets: time <= {data['targets']['time_ratio']}x and peak memory <= {data['targets']['memory_ratio']}x "
        "the bare round trip.",
        "",
        "| model | file | command | wall s (min-max) | peak RSS MB | time x | memory x | targets |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, entry in data["models"].items():
        for key in ("bare", "no-check", "check"):
            row = entry["summary"].get(key)
            if not row:
                continue
            lo, hi = row["wall_s_range"]
            ratios = (f"{row['time_ratio']:.2f} | {row['memory_ratio']:.2f} | "
                      + ("met" if row["meets_targets"] else "**missed**")) if key != "bare" else "- | - | -"
            lines.append(
                f"| {name} | {entry['file_bytes'] / 1e6:.0f} MB | {labels[key]} | {row['wall_s']:.2f} ({lo:.2f}-{hi:.2f}) "
                f"| {row['peak_rss_mb']:.0f} | {ratios} |"
            )
    return "\n".join(lines) + "\n"


def write_doc(sections: list[str], cost_md: str) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    marker = "<!-- generated by benchmarks/run_all.py -->"
    head = text.split(marker)[0] if marker in text else text
    body = "\n".join(sections)
    if cost_md:
        body += "\n## Cost of pruning (whole processes)\n\n" + cost_md
    DOC.write_text(head.rstrip() + "\n\n" + marker + "\n\n" + body)


if __name__ == "__main__":
    main()
