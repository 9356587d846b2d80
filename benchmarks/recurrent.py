"""A recurrent model nobody here trained: ddddocr's captcha recognizer (common.onnx, PyTorch 1.9 export: convs with
SiLU and residual Adds, a bidirectional LSTM of 512 units over the image's columns, a Gemm to 8,210 characters,
greedy CTC decoding).

Labeled data: captchas rendered with the DejaVu fonts (4 to 6 lowercase letters and digits, coloured ink, lines and
speckle), preprocessed as the package does (grayscale, height 64, pixels / 255), width 256. A captcha counts as
read when the greedy CTC string equals its text (case ignored). For dense, L1 and L1 + recovery at ratios 0.3 and
0.5: accuracy on held-out captchas, agreement with the dense model's strings, MACs, and latency side by side (CPU,
1 and 2 threads, batch 1: the export fixes the batch at 1).

    python benchmarks/recurrent.py --json OUT.json [--quick]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WHEEL, MEMBER, CHARSETS = "ddddocr==1.6.1", "ddddocr/common.onnx", "ddddocr/charsets.py"
INPUT, WIDTH = "input1", 256
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def fetch(folder: Path) -> tuple[Path, list[str]]:
    """The model file and its character set (CHARSET_BETA), from the wheel (pip download, no install); cached."""
    from text_orientation import Shipped, fetch_model

    model = fetch_model(folder, Shipped(WHEEL, MEMBER, "ddddocr_common.onnx", INPUT))
    charset = folder / "ddddocr_charset.json"
    if not charset.exists():
        with zipfile.ZipFile(next(folder.glob("ddddocr-*.whl"))) as z:
            tree = ast.parse(z.read(CHARSETS).decode("utf-8"))
        value = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                     and getattr(node.targets[0], "id", "") == "CHARSET_BETA")
        charset.write_text(json.dumps(ast.literal_eval(value)))
    return model, json.loads(charset.read_text())


def _captcha(rng: np.random.Generator, fonts: list[Path]):
    from PIL import Image, ImageDraw, ImageFont

    text = "".join(rng.choice(list(ALPHABET), int(rng.integers(4, 7))))
    img = Image.new("RGB", (160, 60), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(img)
    x = int(rng.integers(4, 15))
    for ch in text:
        font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(30, 39)))
        draw.text((x, int(rng.integers(2, 15))), ch, font=font, fill=tuple(int(v) for v in rng.integers(0, 121, 3)))
        x += int(rng.integers(20, 27))
    for _ in range(int(rng.integers(1, 4))):
        draw.line([tuple(int(v) for v in rng.integers(0, 160, 2)), tuple(int(v) for v in rng.integers(0, 60, 2))],
                  fill=tuple(int(v) for v in rng.integers(0, 161, 3)), width=int(rng.integers(1, 3)))
    for _ in range(150):
        draw.point((int(rng.integers(0, 160)), int(rng.integers(0, 60))), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return text, np.asarray(img.resize((WIDTH, 64)).convert("L"), np.float32)[None] / 255.0


def make_split(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """n captchas: their texts and the model's inputs [n, 1, 64, 256]."""
    from text_orientation import _fonts

    fonts = [f for f in _fonts() if "Oblique" not in f.name and "Condensed" not in f.name]
    rng = np.random.default_rng(seed)
    texts, xs = zip(*(_captcha(rng, fonts) for _ in range(n)))
    return list(texts), np.stack(xs)


def decode(scores: np.ndarray, charset: list[str]) -> str:
    """Greedy CTC: the best class per column, repeats merged, blanks (class 0) dropped."""
    best = scores.reshape(-1, scores.shape[-1]).argmax(-1)
    return "".join(charset[i] for k, i in enumerate(best) if i and (k == 0 or i != best[k - 1]))


def read(model, xs: np.ndarray, charset: list[str]) -> list[str]:
    from onnxprune.session import open_session

    session = open_session(model)
    return [decode(session.run(None, {INPUT: xs[i:i + 1]})[0], charset).lower() for i in range(len(xs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench-out" / "recurrent")
    parser.add_argument("--quick", action="store_true", help="100 test captchas, 64 for calibration, 3 rounds")
    args = parser.parse_args()
    import onnxruntime

    import onnxprune
    from onnxprune.bench import BenchConfig, bench
    from onnxprune.io import save_model

    onnxruntime.set_default_logger_severity(3)  # as the CLI does: graph-optimizer warnings about the export
    dense, charset = fetch(args.cache)
    texts, test = make_split(100 if args.quick else 500, 1)
    _, calib = make_split(64 if args.quick else 256, 2)
    shapes = {INPUT: [1, 1, 64, WIDTH]}
    paths, rows = [dense], {"dense": {"macs": 1.0}}
    for ratio in (0.3, 0.5):
        for label, options in (("L1", {}), ("L1 + recovery", {"calib": [{INPUT: x[None]} for x in calib]})):
            result = onnxprune.prune(str(dense), ratio=ratio, shapes=shapes, **options)
            path = args.cache / f"ddddocr_{ratio}_{'recovered' if options else 'l1'}.onnx"
            save_model(result.model, path)
            paths.append(path)
            rows[f"{label} {ratio}"] = {"macs": result.report.after.macs / result.report.before.macs}
    strings = {name: read(path, test, charset) for name, path in zip(rows, paths)}
    for name, row in rows.items():
        row["accuracy"] = float(np.mean([s == t for s, t in zip(strings[name], texts)]))
        row["agreement"] = float(np.mean([s == d for s, d in zip(strings[name], strings["dense"])]))
    config = BenchConfig(threads=(1, 2), batches=(1,), rounds=3 if args.quick else 10, runs=5, warmup=3,
                         shapes=shapes)
    report = bench([str(p) for p in paths], config)
    for (_, threads, _), group in report.groups():
        timed = [r for r in group if not r.control]  # in the order of `paths`
        for row, measured in zip(rows.values(), timed):
            row[f"speedup_{threads}t"], row[f"noise_{threads}t"] = measured.speedup, report.noise(group)
    out = {"model": f"{WHEEL}:{MEMBER}", "test": len(texts), "calibration": len(calib), "rows": rows}
    args.json.write_text(json.dumps(out, indent=2))
    print(markdown(out))


def markdown(data: dict) -> str:
    lines = [f"`{data['model']}` (nobody here trained it): {data['test']} held-out synthetic captchas, "
             f"{data['calibration']} others for calibration; latency at 1x1x64x{WIDTH}, CPU, batch 1, side by side "
             "in one run.", "",
             "| model | MACs kept | captchas read | agreement with dense | speedup 1 thread | speedup 2 threads |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in data["rows"].items():
        lines.append(f"| {name} | {row['macs']:.3f} | {row['accuracy']:.3f} | {row['agreement']:.3f} | "
                     f"{row['speedup_1t']:.2f}x | {row['speedup_2t']:.2f}x |")
    noise = max(max(r["noise_1t"], r["noise_2t"]) for r in data["rows"].values())
    lines += ["", f"Control noise at most ±{noise:.1%}. The LSTM's 512 units and the convolutions that feed it prune "
              "together with the rest; recovery refits the convolutions, the LSTM's input weights and the Gemm."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
