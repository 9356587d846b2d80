import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


import numpy as np  # noqa: E402  (after the path setup above)
import onnx  # noqa: E402
import pytest  # noqa: E402

from graphs import image_model  # noqa: E402


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    """Every test sees the CLI without ONNXPRUNE_DEBUG, whatever the environment that runs the suite sets."""
    monkeypatch.delenv("ONNXPRUNE_DEBUG", raising=False)


@pytest.fixture
def files(tmp_path):
    """A small image classifier (graphs.image_model) and 32 calibration samples for it, saved under tmp_path."""
    model = tmp_path / "m.onnx"
    onnx.save(image_model(), model)
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.standard_normal((32, 3, 8, 8)).astype(np.float32))
    return model, calib
